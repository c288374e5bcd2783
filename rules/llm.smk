rule base_model:
    """The base causal LM: a local/hub model, or a tokenizer and tiny Qwen2 built and pretrained here."""
    input:
        reports=rules.ingest.output.reports,
        instructions=results("instruct/instruct_train.parquet"),
    output:
        directory(results("models/base")),
    log:
        logs("base_model"),
    benchmark:
        bench("base_model")
    conda:
        "../envs/train.yaml"
    threads: resources_of("base_model")["threads"]
    resources:
        mem_mb=resources_of("base_model")["mem_mb"],
        runtime=resources_of("base_model")["runtime"],
        gpu=resources_of("base_model")["gpu"],
    params:
        base=config["llm"]["base"],
        allow_download=config["llm"]["allow_download"],
        tiny=config["llm"]["tiny"],
        lowercase=config["instruct"]["lowercase"],
    script:
        "../workflow/scripts/base_model.py"


rule sft:
    """Supervised fine-tuning with TRL's SFTTrainer (completion-only loss); resumes from checkpoints. models/sft_silver is the first of two stages."""
    input:
        unpack(lambda wildcards: trainer_inputs(wildcards, "sft")),
    output:
        directory(results("models/{sft_model}")),
    log:
        logs("{sft_model}"),
    benchmark:
        bench("{sft_model}")
    wildcard_constraints:
        sft_model="sft|sft_silver",
    conda:
        "../envs/train.yaml"
    threads: resources_of("sft")["threads"]
    resources:
        mem_mb=resources_of("sft")["mem_mb"],
        runtime=resources_of("sft")["runtime"],
        gpu=resources_of("sft")["gpu"],
    params:
        settings=lambda wildcards: stage_settings(
            wildcards, "sft", config["llm"]["sft"]
        ),
        prompt=model_settings(),
        epoch_selection=config["llm"]["epoch_selection"],
    script:
        "../workflow/scripts/sft.py"


rule predict_llm:
    """Label the test split with an LLM labeler (the SFT model, or an RLHF policy), and write each label's certainty-word logits."""
    input:
        unpack(lambda wildcards: labeler_model_inputs(wildcards.labeler)),
        reports=rules.ingest.output.reports,
    output:
        results("predictions/{labeler}.parquet"),
        scores=results("predictions/{labeler}_scores.parquet"),
    log:
        logs("predict_{labeler}"),
    benchmark:
        bench("predict_{labeler}")
    wildcard_constraints:
        labeler="|".join(["sft", *RL_ALGORITHMS]),
    conda:
        "../envs/train.yaml"
    threads: resources_of("predict_llm")["threads"]
    resources:
        mem_mb=resources_of("predict_llm")["mem_mb"],
        runtime=resources_of("predict_llm")["runtime"],
        gpu=resources_of("predict_llm")["gpu"],
    params:
        labeler=lambda wildcards: wildcards.labeler,
        split="test",
    script:
        "../workflow/scripts/predict_model.py"
