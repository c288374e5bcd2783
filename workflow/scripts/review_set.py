from cxrlabel.review.pairs import write_review_set
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    sampling = {"batch_size": snakemake.params.batch_size, "max_new_tokens": snakemake.params.max_new_tokens}
    sampling |= {"threads": snakemake.threads, "processes": snakemake.resources.gpu, "log_path": snakemake.log[0]}
    write_review_set(snakemake.input.policy, snakemake.input.reports, snakemake.params.rlhf, sampling, snakemake.output[0])
