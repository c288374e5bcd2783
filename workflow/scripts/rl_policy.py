from cxrlabel.distributed import launch
from cxrlabel.runlog import logged
from cxrlabel.training.preferences import counted_observations
from cxrlabel.training.rlhf import rl_processes

with logged(snakemake.log[0]):
    algorithm = snakemake.wildcards.algorithm
    job = {"algorithm": algorithm, "inputs": dict(snakemake.input), "out_dir": snakemake.output[0], "settings": snakemake.params.settings}
    job |= {"rewards": snakemake.params.rewards, "prompt_split": snakemake.params.prompt_split, "threads": snakemake.threads}
    job |= {"counted": counted_observations(snakemake.params.learned_no_finding)}
    launch("cxrlabel.training.rlhf:train_rl_policy", job, rl_processes(algorithm, snakemake.resources.gpu), snakemake.log[0])
