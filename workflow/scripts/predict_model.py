import polars as pl

from cxrlabel.labelers import make_labeler
from cxrlabel.predict import predict, write_predictions
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    kind = "bert" if snakemake.rule == "predict_bert" else "llm"
    options = {"batch_size": snakemake.params.batch_size, "threads": snakemake.threads}
    if kind == "llm":
        options |= {"name": snakemake.wildcards.labeler, "max_new_tokens": snakemake.params.max_new_tokens}
    labeler = make_labeler(kind, snakemake.input.model, **options)
    reports = pl.read_parquet(snakemake.input.reports).filter(pl.col("split") == "test")
    write_predictions(predict(labeler, reports.select("study_id", "text"), snakemake.params.batch_size), snakemake.output[0])
