from cxrlabel.distributed import launch
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    job = {"sft_dir": snakemake.input.sft, "preferences_path": snakemake.input.pairs, "out_dir": snakemake.output[0]}
    job |= {"settings": snakemake.params.settings, "held_out_fraction": snakemake.params.held_out_fraction, "threads": snakemake.threads}
    launch("cxrlabel.training.rlhf:train_reward_model", job, snakemake.resources.gpu, snakemake.log[0])
