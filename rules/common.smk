SPLITS = ["train", "validate", "test"]
RL_ALGORITHMS = ["ppo", "grpo", "rloo"]


def results(path):
    """A path under the configured results directory."""
    return f"{config['results']}/{path}"


def resources_of(rule_name):
    """The configured cluster resources of a rule: its own entry over the defaults."""
    return config["resources"]["default"] | config["resources"].get(rule_name, {})


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
        "silver": instruct_labels(wildcards),
        "reports": rules.ingest.output.reports,
    } | predictions


def model_labeler_kind(labeler):
    """The kind of labeler (cxrlabel.labelers.make_labeler) behind a trained labeler's name."""
    return "bert" if labeler == "bert" else "llm"


def model_options(labeler):
    """Prediction settings of a trained labeler: batch size, and the LLM's output budget."""
    if labeler == "bert":
        return {"batch_size": config["labelers"]["bert"]["batch_size"]}
    return {
        "batch_size": config["llm"]["inference"]["batch_size"],
        "max_new_tokens": config["llm"]["inference"]["max_new_tokens"],
    }


def robustness_inputs(wildcards):
    """Gold labels, and for every configured labeler its clean predictions and its predictions
    of every perturbed test split, with the perturbed reports (changed flags, expected flips).
    """
    labelers = config["robustness"]["labelers"]
    perturbations = config["robustness"]["perturbations"]
    inputs = {"gold": rules.ingest.output.gold}
    inputs |= {
        f"clean_{name}": results(f"predictions/{name}.parquet") for name in labelers
    }
    inputs |= {
        f"reports_{p}": results(f"robustness/reports/{p}.parquet")
        for p in perturbations
    }
    return inputs | {
        f"perturbed_{name}_{p}": results(f"robustness/predictions/{p}/{name}.parquet")
        for name in labelers
        for p in perturbations
    }


def prompt_settings():
    """How the LLM is prompted (cxrlabel.instruct.PromptSettings): format, unit, lower case."""
    return {
        "format": config["instruct"]["format"],
        "unit": config["instruct"]["unit"],
        "lowercase": config["instruct"]["lowercase"],
    }


def instruct_labels(wildcards):
    """Silver labels of the instruction sets: the corpus's own, or the rule labeler's."""
    if config["instruct"]["labels"] == "rule":
        return rules.predict_rule.output[0]
    return rules.ingest.output.silver


def preference_inputs(wildcards):
    """The SFT policy and expert labels for simulated judgements, or the human judgements file."""
    inputs = {"reports": rules.ingest.output.reports}
    if config["rlhf"]["judge"] == "human":
        return inputs | {"judgements": config["rlhf"]["human_judgements"]}
    return inputs | {"policy": rules.sft.output[0], "expert": rules.ingest.output.gold}


def preference_settings():
    """The rlhf settings the preference set depends on (not the reward model's or PPO's)."""
    keys = [
        "judge",
        "human_judgements",
        "preference_split",
        "candidates",
        "temperature",
        "max_pairs_per_report",
        "seed",
    ]
    return {key: config["rlhf"][key] for key in keys}


def rl_rewards(algorithm):
    """PPO learns from the reward model; GRPO and RLOO from the rewards in rlhf.rewards."""
    return ["learned"] if algorithm == "ppo" else config["rlhf"]["rewards"]


def rl_policy_inputs(wildcards):
    """The SFT policy, the prompts, and what the algorithm's rewards need."""
    inputs = {"sft": rules.sft.output[0], "reports": rules.ingest.output.reports}
    rewards = rl_rewards(wildcards.algorithm)
    if "learned" in rewards:
        inputs["reward"] = rules.reward_model.output[0]
    if "verifiable" in rewards:
        inputs["expert"] = rules.ingest.output.gold
    return inputs
