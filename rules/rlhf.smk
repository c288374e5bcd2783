rule review_set:
    """Blinded pairs of SFT candidate outputs for radiologists to judge (cxrlabel review)."""
    input:
        policy=results("models/sft"),
        reports=rules.ingest.output.reports,
    output:
        results("review/pairs.csv"),
    log:
        logs("review_set"),
    benchmark:
        bench("review_set")
    conda:
        "../envs/train.yaml"
    threads: resources_of("review_set")["threads"]
    resources:
        mem_mb=resources_of("review_set")["mem_mb"],
        runtime=resources_of("review_set")["runtime"],
        gpu=resources_of("review_set")["gpu"],
    params:
        rlhf=sampling_settings(),
    script:
        "../workflow/scripts/review_set.py"


rule preferences:
    """The preference collection set: SFT candidates ranked by a simulated expert, or human judgements."""
    input:
        unpack(preference_inputs),
    output:
        pairs=results("rlhf/preferences.parquet"),
        dropped=results("rlhf/preferences_dropped.parquet"),
        summary=results("rlhf/preferences_summary.json"),
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
        prompt=prompt_settings(),
        review_pairs=rules.review_set.output[0],
    script:
        "../workflow/scripts/preferences.py"


rule reward_model:
    """TRL RewardTrainer (pairwise loss) on the preference pairs, initialised from the SFT model."""
    input:
        sft=results("models/sft"),
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


rule rl_policy:
    """RL of the SFT policy, KL-penalised to it: PPO with the reward model (paper 2), or GRPO/RLOO."""
    input:
        unpack(rl_policy_inputs),
    output:
        directory(results("models/{algorithm}")),
    log:
        logs("{algorithm}"),
    benchmark:
        bench("{algorithm}")
    wildcard_constraints:
        algorithm="|".join(RL_ALGORITHMS),
    conda:
        "../envs/train.yaml"
    threads: resources_of("rl_policy")["threads"]
    resources:
        mem_mb=resources_of("rl_policy")["mem_mb"],
        runtime=resources_of("rl_policy")["runtime"],
        gpu=resources_of("rl_policy")["gpu"],
    params:
        settings=lambda wildcards: config["rlhf"][wildcards.algorithm],
        rewards=lambda wildcards: rl_rewards(wildcards.algorithm),
        prompt_split=config["rlhf"]["prompt_split"],
        learned_no_finding=learned_no_finding(),
    script:
        "../workflow/scripts/rl_policy.py"
