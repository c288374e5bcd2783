import polars as pl

from cxrlabel.labelers import make_labeler
from cxrlabel.predict import predict_perturbed, prediction_settings, report_stage_options, write_predictions
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    kind, options, chunk_size = prediction_settings(snakemake.config, snakemake.wildcards.labeler)
    options |= report_stage_options(snakemake.input)
    labeler = make_labeler(kind, snakemake.input.get("model"), **options, threads=snakemake.threads)
    perturbed = pl.read_parquet(snakemake.input.reports, columns=["study_id", "perturbation", "text", "changed"])
    write_predictions(predict_perturbed(labeler, perturbed, chunk_size), snakemake.output[0])
