from cxrlabel.runlog import logged
from cxrlabel.training.rlhf import train_reward_model

with logged(snakemake.log[0]):
    train_reward_model(
        snakemake.input.sft,
        snakemake.input.pairs,
        snakemake.output[0],
        snakemake.params.settings,
        snakemake.params.held_out_fraction,
        snakemake.threads,
    )
