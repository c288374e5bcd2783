import polars as pl

from cxrlabel.labelers import make_labeler
from cxrlabel.predict import predict, prediction_settings, write_predictions
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports, columns=["study_id", "text"])
    _, _, chunk_size = prediction_settings(snakemake.config, "rule")
    write_predictions(predict(make_labeler("rule"), reports, chunk_size), snakemake.output[0])
