from cxrlabel.runlog import logged
from cxrlabel.training.rlhf import train_rl_policy

with logged(snakemake.log[0]):
    train_rl_policy(
        snakemake.wildcards.algorithm,
        dict(snakemake.input),
        snakemake.output[0],
        snakemake.params.settings,
        snakemake.params.rewards,
        snakemake.params.prompt_split,
        snakemake.threads,
    )
