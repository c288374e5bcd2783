rule preferences:
    """The preference collection set: SFT candidates ranked by a simulated expert, or human judgements."""
    input:
        unpack(preference_inputs),
    output:
        pairs=results("rlhf/preferences.parquet"),
        dropped=results("rlhf/preferences_dropped.parquet"),
    log:
        logs("preferences"),
    benchmark:
        bench("preferences")
    conda:
        "../envs/train.yaml"
    threads: resources_of("preferences")["threads"]
    resources:
        mem_mb=resources_of("preferences")["mem_mb"],
        runtime=resources_of("preferences")["runtime"],
        gpu=resources_of("preferences")["gpu"],
    params:
        rlhf=preference_settings(),
        batch_size=config["llm"]["inference"]["batch_size"],
        max_new_tokens=config["llm"]["inference"]["max_new_tokens"],
        fmt=config["instruct"]["format"],
    script:
        "../workflow/scripts/preferences.py"


rule reward_model:
    """TRL RewardTrainer (pairwise loss) on the preference pairs, initialised from the SFT model."""
    input:
        sft=rules.sft.output[0],
        pairs=rules.preferences.output.pairs,
    output:
        directory(results("models/reward")),
    log:
        logs("reward_model"),
    benchmark:
        bench("reward_model")
    conda:
        "../envs/train.yaml"
    threads: resources_of("reward_model")["threads"]
    resources:
        mem_mb=resources_of("reward_model")["mem_mb"],
        runtime=resources_of("reward_model")["runtime"],
        gpu=resources_of("reward_model")["gpu"],
    params:
        settings=config["rlhf"]["reward"],
        held_out_fraction=config["rlhf"]["held_out_fraction"],
    script:
        "../workflow/scripts/reward_model.py"


rule ppo:
    """PPO of the SFT policy against the reward model, KL-penalised to the SFT reference."""
    input:
        sft=rules.sft.output[0],
        reward=rules.reward_model.output[0],
        reports=rules.ingest.output.reports,
    output:
        directory(results("models/ppo")),
    log:
        logs("ppo"),
    benchmark:
        bench("ppo")
    conda:
        "../envs/train.yaml"
    threads: resources_of("ppo")["threads"]
    resources:
        mem_mb=resources_of("ppo")["mem_mb"],
        runtime=resources_of("ppo")["runtime"],
        gpu=resources_of("ppo")["gpu"],
    params:
        settings=config["rlhf"]["ppo"],
        prompt_split=config["rlhf"]["prompt_split"],
    script:
        "../workflow/scripts/ppo.py"
