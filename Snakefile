"""cxrlabel: chest X-ray reports -> structured labels with a fine-tuned LM, and how good they are.

`snakemake --cores all` runs the embedded default (config/config.yaml); pass
`--configfile config/mimic.yaml` or `config/openi.yaml` for the other corpora.
"""

from snakemake.utils import min_version, validate

from cxrlabel.workflow_config import check_config

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
# what spans several keys (split fractions summing to 1, the figures' labelers evaluated), before the DAG
check_config(config)


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/expert.smk"
include: "rules/instruct.smk"
include: "rules/predict.smk"
include: "rules/bert.smk"
include: "rules/llm.smk"
include: "rules/rlhf.smk"
include: "rules/evaluate.smk"
include: "rules/robustness.smk"
include: "rules/figures.smk"
include: "rules/calibration.smk"


rule all:
    input:
        expand(results("instruct/instruct_{split}.parquet"), split=SPLITS),
        rules.evaluate.output,
        rules.significance.output,
        rules.robustness.output,
        rules.figures.output,
        calibration_tables(),
