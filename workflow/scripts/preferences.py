from cxrlabel.instruct import PromptSettings
from cxrlabel.runlog import logged
from cxrlabel.training.preferences import collect_preferences

with logged(snakemake.log[0]):
    sampling = {"batch_size": snakemake.params.batch_size, "max_new_tokens": snakemake.params.max_new_tokens}
    sampling |= {"threads": snakemake.threads, "processes": snakemake.resources.gpu, "log_path": snakemake.log[0]}
    collect_preferences(
        dict(snakemake.input),
        snakemake.params.rlhf,
        PromptSettings(**snakemake.params.prompt),
        sampling,
        dict(snakemake.output),
        snakemake.params.review_pairs,
    )
