from cxrlabel.instruct import PromptSettings
from cxrlabel.runlog import logged
from cxrlabel.training.preferences import collect_preferences

with logged(snakemake.log[0]):
    # the pace (prediction_settings), and the answer room stored with the policy
    sampling = {"batch_size": snakemake.config["llm"]["inference"]["batch_size"], "max_new_tokens": None}
    sampling |= {"threads": snakemake.threads, "processes": snakemake.resources.gpu, "log_path": snakemake.log[0]}
    collect_preferences(
        dict(snakemake.input),
        snakemake.params.rlhf,
        PromptSettings(**snakemake.params.prompt),
        sampling,
        dict(snakemake.output),
        snakemake.params.review_pairs,
    )
