from cxrlabel.distributed import launch
from cxrlabel.predict import join_parts
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    params = dict(snakemake.params.items())
    if "kind" in params:  # predict_validate: any labeler with scores, on the split it names
        kind, options, split = params["kind"], params["options"], params["split"]
    else:
        kind, split = ("bert" if snakemake.rule == "predict_bert" else "llm"), "test"
        options = {"batch_size": params["batch_size"]}
        if kind == "llm":
            options |= {"name": snakemake.wildcards.labeler, "max_new_tokens": params["max_new_tokens"]}
    if "no_finding" in snakemake.input:  # an LLM labeler's learned No Finding (expert.no_finding)
        options |= {"no_finding": snakemake.input.no_finding}
    job = {"kind": kind, "model": snakemake.input.model, "reports": snakemake.input.reports, "out": snakemake.output[0], "split": split}
    job |= {"options": options, "threads": snakemake.threads, "chunk_size": params["chunk_size"]}
    launch("cxrlabel.predict:predict_split_job", job, snakemake.resources.gpu, snakemake.log[0])
    join_parts(snakemake.output[0], snakemake.resources.gpu)
