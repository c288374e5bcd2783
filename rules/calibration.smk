rule predict_validate:
    """Label the validate split with a labeler that has scores (bert, an LLM): the set its temperature is fitted on."""
    input:
        unpack(lambda wildcards: labeler_model_inputs(wildcards.labeler)),
        reports=rules.ingest.output.reports,
    output:
        predictions=results("predictions/validate/{labeler}.parquet"),
        scores=results("predictions/validate/{labeler}_scores.parquet"),
    log:
        logs("predict_validate_{labeler}"),
    benchmark:
        bench("predict_validate_{labeler}")
    wildcard_constraints:
        labeler="|".join(["bert", "sft", *RL_ALGORITHMS]),
    conda:
        "../envs/train.yaml"
    threads: lambda wildcards: prediction_resources(wildcards.labeler)["threads"]
    resources:
        mem_mb=lambda wildcards: prediction_resources(wildcards.labeler)["mem_mb"],
        runtime=lambda wildcards: prediction_resources(wildcards.labeler)["runtime"],
        gpu=lambda wildcards: prediction_resources(wildcards.labeler)["gpu"],
    params:
        labeler=lambda wildcards: wildcards.labeler,
        split="validate",
    script:
        "../workflow/scripts/predict_model.py"


rule calibrate:
    """Fit a labeler's temperature on the validate split (never test): gold labels if 4-class and covering it, else silver."""
    input:
        unpack(calibration_inputs),
    output:
        results("models/{labeler}.calibration.json"),
    log:
        logs("calibrate_{labeler}"),
    benchmark:
        bench("calibrate_{labeler}")
    wildcard_constraints:
        labeler="|".join(["bert", "sft", *RL_ALGORITHMS]),
    conda:
        "../envs/eval.yaml"
    threads: resources_of("calibrate")["threads"]
    resources:
        mem_mb=resources_of("calibrate")["mem_mb"],
        runtime=resources_of("calibrate")["runtime"],
    params:
        bins=config["evaluation"]["calibration_bins"],
    script:
        "../workflow/scripts/calibrate.py"


rule calibration_table:
    """Table 9: each scored labeler's ECE on the test split before and after its temperature, and the reliability bins."""
    input:
        reports=rules.ingest.output.reports,
        gold=rules.ingest.output.gold,
        silver=silver_labels,
        calibrations=[
            results(f"models/{name}.calibration.json")
            for name in calibrated_labelers()
        ],
        scores=[
            results(f"predictions/{name}_scores.parquet")
            for name in calibrated_labelers()
        ],
    output:
        table=results("tables/table9_calibration.csv"),
        bins=results("tables/reliability_bins.csv"),
    log:
        logs("calibration_table"),
    benchmark:
        bench("calibration_table")
    conda:
        "../envs/eval.yaml"
    threads: resources_of("calibration_table")["threads"]
    resources:
        mem_mb=resources_of("calibration_table")["mem_mb"],
        runtime=resources_of("calibration_table")["runtime"],
    params:
        labelers=calibrated_labelers(),
        bins=config["evaluation"]["calibration_bins"],
    script:
        "../workflow/scripts/calibration_table.py"
