rule perturb:
    """The test split's reports with one perturbation of their form (or a meaning-changing control) applied."""
    input:
        reports=rules.ingest.output.reports,
    output:
        results("robustness/reports/{perturbation}.parquet"),
    log:
        logs("perturb_{perturbation}"),
    benchmark:
        bench("perturb_{perturbation}")
    wildcard_constraints:
        perturbation="|".join(config["robustness"]["perturbations"]),
    conda:
        "../envs/data.yaml"
    threads: resources_of("perturb")["threads"]
    resources:
        mem_mb=resources_of("perturb")["mem_mb"],
        runtime=resources_of("perturb")["runtime"],
    params:
        seed=config["robustness"]["seed"],
    script:
        "../workflow/scripts/perturb.py"


rule predict_perturbed_rule:
    """Label a perturbed test split with the rule-based labeler."""
    input:
        reports=rules.perturb.output[0],
    output:
        results("robustness/predictions/{perturbation}/rule.parquet"),
    log:
        logs("predict_perturbed_rule_{perturbation}"),
    benchmark:
        bench("predict_perturbed_rule_{perturbation}")
    conda:
        "../envs/data.yaml"
    threads: resources_of("predict_rule")["threads"]
    resources:
        mem_mb=resources_of("predict_rule")["mem_mb"],
        runtime=resources_of("predict_rule")["runtime"],
    params:
        batch_size=config["labelers"]["rule"]["batch_size"],
    script:
        "../workflow/scripts/predict_rule.py"


rule predict_perturbed_model:
    """Label a perturbed test split with a trained labeler (BERT, the SFT model or an RL policy)."""
    input:
        reports=rules.perturb.output[0],
        model=results("models/{labeler}"),
    output:
        results("robustness/predictions/{perturbation}/{labeler}.parquet"),
    log:
        logs("predict_perturbed_{labeler}_{perturbation}"),
    benchmark:
        bench("predict_perturbed_{labeler}_{perturbation}")
    wildcard_constraints:
        labeler="|".join(["bert", "sft", *RL_ALGORITHMS]),
    conda:
        "../envs/train.yaml"
    threads: resources_of("predict_perturbed_model")["threads"]
    resources:
        mem_mb=resources_of("predict_perturbed_model")["mem_mb"],
        runtime=resources_of("predict_perturbed_model")["runtime"],
        gpu=resources_of("predict_perturbed_model")["gpu"],
    params:
        kind=lambda wildcards: model_labeler_kind(wildcards.labeler),
        batch_size=lambda wildcards: model_options(wildcards.labeler)["batch_size"],
        max_new_tokens=lambda wildcards: model_options(wildcards.labeler).get(
            "max_new_tokens"
        ),
    script:
        "../workflow/scripts/predict_model.py"


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
        perturbations=config["robustness"]["perturbations"],
        max_flip_rate=config["robustness"]["max_flip_rate"],
        min_control_flip_rate=config["robustness"]["min_control_flip_rate"],
    script:
        "../workflow/scripts/robustness.py"
