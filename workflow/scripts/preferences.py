from cxrlabel.instruct import PromptSettings
from cxrlabel.runlog import logged
from cxrlabel.training.preferences import collect_preferences

with logged(snakemake.log[0]):
    collect_preferences(
        dict(snakemake.input),
        snakemake.params.rlhf,
        PromptSettings(**snakemake.params.prompt),
        snakemake.params.batch_size,
        snakemake.params.max_new_tokens,
        dict(snakemake.output),
        snakemake.params.review_pairs,
    )
