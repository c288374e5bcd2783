from cxrlabel.distributed import launch
from cxrlabel.predict import join_parts
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    kind = "bert" if snakemake.rule == "predict_bert" else "llm"
    options = {"batch_size": snakemake.params.batch_size}
    if kind == "llm":
        options |= {"name": snakemake.wildcards.labeler, "max_new_tokens": snakemake.params.max_new_tokens}
    job = {"kind": kind, "model": snakemake.input.model, "reports": snakemake.input.reports, "out": snakemake.output[0]}
    job |= {"options": options, "threads": snakemake.threads, "chunk_size": snakemake.params.chunk_size}
    launch("cxrlabel.predict:predict_split_job", job, snakemake.resources.gpu, snakemake.log[0])
    join_parts(snakemake.output[0], snakemake.resources.gpu)
