from cxrlabel.distributed import launch
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    job = dict(snakemake.input) | {"out": snakemake.output[0], "threads": snakemake.threads}
    params = {key: getattr(snakemake.params, key) for key in ("settings", "prompt", "epoch_selection")}
    inference = {key: snakemake.params.inference[key] for key in ("batch_size", "max_new_tokens")}
    launch("cxrlabel.training.sft:sft_job", job | params | {"inference": inference}, snakemake.resources.gpu, snakemake.log[0])
