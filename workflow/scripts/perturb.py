import polars as pl

from cxrlabel.perturb import perturb_reports
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports).filter(pl.col("split") == "test")
    perturb_reports(reports, snakemake.wildcards.perturbation, snakemake.params.seed).write_parquet(snakemake.output[0])
