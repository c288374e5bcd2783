from cxrlabel.distributed import launch
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    job = dict(snakemake.input) | {"out": snakemake.output[0], "threads": snakemake.threads}
    params = {key: getattr(snakemake.params, key) for key in ("settings", "prompt", "epoch_selection")}
    # the selection's labeling: its pace from the config (prediction_settings), its answer room the model's
    inference = {"batch_size": snakemake.config["llm"]["inference"]["batch_size"], "max_new_tokens": snakemake.params.prompt["max_new_tokens"]}
    launch("cxrlabel.training.sft:sft_job", job | params | {"inference": inference}, snakemake.resources.gpu, snakemake.log[0])
