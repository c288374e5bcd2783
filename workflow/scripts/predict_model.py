from cxrlabel.distributed import launch
from cxrlabel.predict import join_parts, prediction_settings, report_stage_options
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    kind, options, chunk_size = prediction_settings(snakemake.config, snakemake.params.labeler)
    options |= report_stage_options(snakemake.input)
    job = {"kind": kind, "model": snakemake.input.model, "reports": snakemake.input.reports, "out": snakemake.output[0]}
    job |= {"split": snakemake.params.split, "options": options, "threads": snakemake.threads, "chunk_size": chunk_size}
    launch("cxrlabel.predict:predict_split_job", job, snakemake.resources.gpu, snakemake.log[0])
    join_parts(snakemake.output[0], snakemake.resources.gpu)
