rule perturb:
    """The robustness split's reports (test; validate to choose levers) under every configured perturbation of their form (and control), in one table."""
    input:
        reports=rules.ingest.output.reports,
    output:
        results("robustness/reports.parquet"),
    log:
        logs("perturb"),
    benchmark:
        bench("perturb")
    conda:
        "../envs/data.yaml"
    threads: resources_of("perturb")["threads"]
    resources:
        mem_mb=resources_of("perturb")["mem_mb"],
        runtime=resources_of("perturb")["runtime"],
    params:
        split=config["robustness"]["split"],
        perturbations=config["robustness"]["perturbations"],
        seed=config["robustness"]["seed"],
    script:
        "../workflow/scripts/perturb.py"


rule predict_perturbed:
    """Label the changed perturbed reports with one labeler, loaded once for every perturbation.

    An unchanged report keeps the labeler's clean prediction (rule robustness reads it): it is the
    clean text, and every labeler is deterministic.
    """
    input:
        unpack(perturbed_prediction_inputs),
    output:
        results("robustness/predictions/{labeler}.parquet"),
    log:
        logs("predict_perturbed_{labeler}"),
    benchmark:
        bench("predict_perturbed_{labeler}")
    wildcard_constraints:
        labeler="|".join(config["robustness"]["labelers"]),
    conda:
        prediction_env
    threads: lambda wildcards: prediction_resources(wildcards.labeler)["threads"]
    resources:
        mem_mb=lambda wildcards: prediction_resources(wildcards.labeler)["mem_mb"],
        runtime=lambda wildcards: prediction_resources(wildcards.labeler)["runtime"],
        gpu=lambda wildcards: prediction_resources(wildcards.labeler)["gpu"],
    script:
        "../workflow/scripts/predict_perturbed.py"


rule robustness:
    """Label flip rates of every configured labeler under every perturbation, F1 clean and perturbed, against the bars."""
    input:
        unpack(robustness_inputs),
    output:
        results("tables/robustness.csv"),
    log:
        logs("robustness"),
    benchmark:
        bench("robustness")
    conda:
        "../envs/eval.yaml"
    threads: resources_of("robustness")["threads"]
    resources:
        mem_mb=resources_of("robustness")["mem_mb"],
        runtime=resources_of("robustness")["runtime"],
    params:
        labelers=config["robustness"]["labelers"],
        max_flip_rate=config["robustness"]["max_flip_rate"],
        min_control_flip_rate=config["robustness"]["min_control_flip_rate"],
    script:
        "../workflow/scripts/robustness.py"
