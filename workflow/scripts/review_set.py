from cxrlabel.review.pairs import write_review_set
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_review_set(
        snakemake.input.policy,
        snakemake.input.reports,
        snakemake.params.rlhf,
        snakemake.params.batch_size,
        snakemake.params.max_new_tokens,
        snakemake.output[0],
    )
