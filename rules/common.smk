from pathlib import Path

SPLITS = ["train", "validate", "test"]
RL_ALGORITHMS = ["ppo", "grpo", "rloo"]


def results(path):
    """A path under the configured results directory."""
    return f"{config['results']}/{path}"


def resources_of(rule_name):
    """The configured cluster resources of a rule: its own entry over the defaults, its threads
    at most resources.max_threads where that is set."""
    resources = config["resources"]
    own = resources["default"] | resources.get(rule_name, {})
    cap = resources.get("max_threads")
    return own | {"threads": min(own["threads"], cap)} if cap else own


def logs(rule_name):
    return results(f"logs/{rule_name}.log")


def bench(rule_name):
    """Snakemake's per-rule record of wall time and peak memory."""
    return results(f"benchmarks/{rule_name}.tsv")


def ingest_inputs(wildcards):
    """The released files of the configured corpus format."""
    corpus = config["corpus"]
    return (
        {"csv": corpus["openi"]["csv"]}
        if corpus["format"] == "openi"
        else corpus["mimic"]
    )


def evaluation_inputs(wildcards):
    """Gold and silver labels, report lengths and the predictions of every evaluated labeler."""
    predictions = {
        f"predictions_{name}": results(f"predictions/{name}.parquet")
        for name in config["evaluation"]["labelers"]
    }
    return {
        "gold": rules.ingest.output.gold,
        "silver": silver_labels(wildcards),
        "reports": rules.ingest.output.reports,
    } | predictions


def labeler_kind(labeler):
    """The kind of labeler (cxrlabel.labelers.make_labeler) behind a labeler's name: rule, bert or llm."""
    return labeler if labeler in ("rule", "bert") else "llm"


def prediction_resources(labeler):
    """The resources of a labeler's clean prediction (predict_rule, predict_bert or predict_llm),
    which its perturbed prediction shares."""
    return resources_of(f"predict_{labeler_kind(labeler)}")


def prediction_env(wildcards):
    """The conda environment of a labeler's prediction: the rule labeler needs no torch.
    (Relative to rules/, like every conda directive.)"""
    return "../envs/data.yaml" if wildcards.labeler == "rule" else "../envs/train.yaml"


def perturbed_prediction_inputs(wildcards):
    """The perturbed reports, and the trained model of a labeler that has one."""
    inputs = {"reports": rules.perturb.output[0]}
    if wildcards.labeler == "rule":
        return inputs
    return inputs | labeler_model_inputs(wildcards.labeler)


def clean_predictions(labeler):
    """A labeler's predictions of the robustness split's clean reports: the test split's, or the
    validate split's (the rule labeler's predictions cover every split)."""
    if config["robustness"]["split"] == "test" or labeler == "rule":
        return results(f"predictions/{labeler}.parquet")
    return results(f"predictions/validate/{labeler}.parquet")


def robustness_inputs(wildcards):
    """Gold labels, the perturbed reports (changed flags, expected flips), and for every
    configured labeler its clean predictions and its predictions of the changed perturbed reports.
    """
    labelers = config["robustness"]["labelers"]
    inputs = {"gold": rules.ingest.output.gold, "reports": rules.perturb.output[0]}
    inputs |= {f"clean_{name}": clean_predictions(name) for name in labelers}
    return inputs | {
        f"perturbed_{name}": results(f"robustness/predictions/{name}.parquet")
        for name in labelers
    }


def prompt_settings():
    """How the LLM is prompted (cxrlabel.instruct.PromptSettings): format, unit, lower case."""
    return {
        "format": config["instruct"]["format"],
        "unit": config["instruct"]["unit"],
        "lowercase": config["instruct"]["lowercase"],
    }


def model_settings():
    """Recorded beside the SFT model (cxrlabel_llm.json): how it is prompted, and
    the room its answers get in every later use (cxrlabel label, RL)."""
    return prompt_settings() | {
        "max_new_tokens": config["llm"]["inference"]["max_new_tokens"]
    }


def silver_labels(wildcards):
    """The silver labels: the corpus's own, or the rule labeler's (instruct.labels)."""
    if config["instruct"]["labels"] == "rule":
        return rules.predict_rule.output[0]
    return rules.ingest.output.silver


def two_stages():
    """Whether the trained labelers learn in two stages: silver, then the expert-labeled reports."""
    return config["expert"]["targets"] == "silver_then_expert"


def training_labels(wildcards):
    """What the (first) training stage learns from: the corrected labels, or the silver ones."""
    if config["expert"]["targets"] == "corrected":
        return rules.targets.output.corrected
    return silver_labels(wildcards)


def targets_inputs(wildcards):
    """The silver and expert labels the training labels are made of, and an expert-labels file."""
    inputs = {
        "silver": silver_labels(wildcards),
        "gold": rules.ingest.output.gold,
        "reports": rules.ingest.output.reports,
    }
    if config["expert"]["labels"]:
        inputs["expert_file"] = config["expert"]["labels"]
    return inputs


def trainer_inputs(wildcards, model):
    """What a trainer's stage reads (model: bert or sft): the reports, its labels, and the labels
    models are chosen on (the expert labels, else the silver ones); the SFT model's base and
    instructions. The second of two stages (models/bert, models/sft) starts from the first
    (models/<model>_silver) and learns from the expert-labeled training reports."""
    second = two_stages() and getattr(wildcards, f"{model}_model") == model
    inputs = {
        "reports": rules.ingest.output.reports,
        "labels": rules.targets.output.expert if second else training_labels(wildcards),
        "silver": silver_labels(wildcards),
        "gold": rules.ingest.output.gold,
    }
    if second:
        inputs["start"] = results(f"models/{model}_silver")
    if model == "sft":
        instructions = "instruct_expert" if second else "instruct_train"
        inputs["train"] = results(f"instruct/{instructions}.parquet")
        inputs["validate"] = results("instruct/instruct_validate.parquet")
        inputs["base"] = inputs.pop("start", rules.base_model.output[0])
    return inputs


def stage_settings(wildcards, model, settings):
    """A trainer's settings; the second of two stages has expert.second_stage's over them."""
    if two_stages() and getattr(wildcards, f"{model}_model") == model:
        return (
            settings
            | config["expert"]["second_stage"]["llm" if model == "sft" else model]
        )
    return settings


def labeler_model_inputs(labeler):
    """A trained labeler's model, and its report-level stages where it has them: the learned No
    Finding model, the expert stage."""
    inputs = {"model": results(f"models/{labeler}")}
    if learned_no_finding():
        inputs["no_finding"] = rules.no_finding_model.output[0]
    if config["expert"]["stage"] == "learned":
        inputs["expert_stage"] = rules.expert_stage_model.output[0]
    return inputs


def preference_inputs(wildcards):
    """The SFT policy and expert labels for simulated judgements, or the human judgements file.

    A judgements file that does not exist yet is left out, so that the DAG plans and runs up to
    the preferences job, which then says how to produce it (review_set, cxrlabel review).
    """
    inputs = {"reports": rules.ingest.output.reports}
    if config["rlhf"]["judge"] == "human":
        judgements = config["rlhf"]["human_judgements"]
        return inputs | (
            {"judgements": judgements} if Path(judgements).exists() else {}
        )
    return inputs | {
        "policy": results("models/sft"),
        "expert": rules.ingest.output.gold,
    }


def learned_no_finding():
    """Whether a report-level model decides the trained labelers' No Finding (expert.no_finding),
    so that the LLM policies' rewards leave it out."""
    return config["expert"]["no_finding"] == "learned"


def sampling_settings():
    """The rlhf settings that decide which SFT candidates are sampled and paired (review_set)."""
    keys = [
        "preference_splits",
        "candidates",
        "temperature",
        "max_pairs_per_report",
        "seed",
    ]
    return {key: config["rlhf"][key] for key in keys}


def preference_settings():
    """The rlhf settings the preference set depends on: its judge's (not the reward model's or
    PPO's). Human judgements are read, not sampled; the simulated judge samples and pairs.
    """
    if config["rlhf"]["judge"] == "human":
        keys = ["judge", "human_judgements", "preference_splits"]
        return {key: config["rlhf"][key] for key in keys}
    return {
        "judge": "simulated",
        "learned_no_finding": learned_no_finding(),
    } | sampling_settings()


def rl_rewards(algorithm):
    """PPO learns from the reward model; GRPO and RLOO from the rewards in rlhf.rewards."""
    return ["learned"] if algorithm == "ppo" else config["rlhf"]["rewards"]


def rl_policy_inputs(wildcards):
    """The SFT policy, the prompts, and what the algorithm's rewards need."""
    inputs = {"sft": results("models/sft"), "reports": rules.ingest.output.reports}
    rewards = rl_rewards(wildcards.algorithm)
    if "learned" in rewards:
        inputs["reward"] = rules.reward_model.output[0]
    if "verifiable" in rewards:
        inputs["expert"] = rules.ingest.output.gold
    return inputs


def rl_labelers():
    """The RL algorithms among the evaluated labelers (each has models/<algorithm>/rl_curves.csv)."""
    return [name for name in config["evaluation"]["labelers"] if name in RL_ALGORITHMS]


def rl_curves_figure():
    """The RL training curves figure, where an RL labeler is evaluated."""
    if not rl_labelers():
        return {}
    return {
        "rl_curves": report(
            results("figures/rl_curves.png"),
            caption="../workflow/report/rl_curves.rst",
            category="RLHF",
        )
    }


def calibrated_labelers():
    """The evaluated labelers with scores (cxrlabel.labelers.Labeled.scores): all but the rule labeler."""
    return [name for name in config["evaluation"]["labelers"] if name != "rule"]


def calibration_inputs(wildcards):
    """A labeler's scores of the validate split, and the labels a temperature may be fitted on:
    the expert labels (if 4-class and covering validate, cxrlabel.evaluation.calibration.fitting_reference) or the silver labels.
    """
    return {
        "reports": rules.ingest.output.reports,
        "gold": rules.ingest.output.gold,
        "silver": silver_labels(wildcards),
        "scores": results(f"predictions/validate/{wildcards.labeler}_scores.parquet"),
    }


def calibration_tables():
    """Table 9 and the reliability bins, where a labeler with scores is evaluated (else none)."""
    if not calibrated_labelers():
        return []
    return [
        results("tables/table9_calibration.csv"),
        results("tables/reliability_bins.csv"),
    ]


def reliability_figure():
    """The reliability diagrams, where a labeler with scores is evaluated."""
    if not calibrated_labelers():
        return {}
    return {
        "reliability": report(
            results("figures/reliability.png"),
            caption="../workflow/report/reliability.rst",
            category="Calibration",
        )
    }
