import polars as pl

from cxrlabel.labelers import make_labeler
from cxrlabel.predict import predict_perturbed, write_predictions
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    options = snakemake.params.options | ({"no_finding": snakemake.input.no_finding} if "no_finding" in snakemake.input else {})
    labeler = make_labeler(snakemake.params.kind, snakemake.input.get("model"), **options, threads=snakemake.threads)
    perturbed = pl.read_parquet(snakemake.input.reports, columns=["study_id", "perturbation", "text", "changed"])
    write_predictions(predict_perturbed(labeler, perturbed, snakemake.params.chunk_size), snakemake.output[0])
