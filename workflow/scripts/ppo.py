import polars as pl

from cxrlabel.runlog import logged
from cxrlabel.training.rlhf import run_ppo

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports).filter(pl.col("split") == snakemake.params.prompt_split)
    run_ppo(snakemake.input.sft, snakemake.input.reward, reports, snakemake.output[0], snakemake.params.settings, snakemake.threads)
