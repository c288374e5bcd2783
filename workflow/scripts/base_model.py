import polars as pl

from cxrlabel.training.base_model import TinyModelSpec, build_base_model
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports).filter(pl.col("split") == "train")["text"].to_list()
    instructions = pl.read_parquet(snakemake.input.instructions)
    build_base_model(
        snakemake.output[0],
        snakemake.params.base,
        snakemake.params.allow_download,
        reports,
        (instructions["prompt"] + instructions["completion"]).to_list(),
        TinyModelSpec(**snakemake.params.tiny, threads=snakemake.threads),
        snakemake.params.lowercase,
    )
