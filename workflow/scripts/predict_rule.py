import polars as pl

from cxrlabel.labelers import make_labeler
from cxrlabel.predict import predict, write_predictions
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    reports = pl.read_parquet(snakemake.input.reports, columns=["study_id", "text"])
    predictions = predict(make_labeler("rule"), reports, snakemake.params.batch_size)
    write_predictions(predictions, snakemake.output[0])
