from cxrlabel.runlog import logged
from cxrlabel.training.preferences import collect_preferences

with logged(snakemake.log[0]):
    collect_preferences(
        dict(snakemake.input),
        snakemake.params.rlhf,
        snakemake.params.fmt,
        snakemake.params.batch_size,
        snakemake.params.max_new_tokens,
        dict(snakemake.output),
    )
