import polars as pl

from cxrlabel.perturb import perturbed_reports_table
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports).filter(pl.col("split") == snakemake.params.split)
    perturbed_reports_table(reports, snakemake.params.perturbations, snakemake.params.seed).write_parquet(snakemake.output[0])
