rule targets:
    """The training labels: the silver labels corrected by the expert labels of the training reports (expert.targets)."""
    input:
        unpack(targets_inputs),
    output:
        corrected=results("corpus/labels_corrected.parquet"),
        expert=results("corpus/labels_expert_train.parquet"),
        summary=results("corpus/targets_summary.json"),
    log:
        logs("targets"),
    benchmark:
        bench("targets")
    conda:
        "../envs/data.yaml"
    threads: resources_of("targets")["threads"]
    resources:
        mem_mb=resources_of("targets")["mem_mb"],
        runtime=resources_of("targets")["runtime"],
    script:
        "../workflow/scripts/targets.py"


rule instruct_expert:
    """The second training stage's instructions (silver_then_expert): the expert-labeled training reports, their corrected labels."""
    input:
        reports=rules.ingest.output.reports,
        labels=rules.targets.output.expert,
    output:
        results("instruct/instruct_expert.parquet"),
    log:
        logs("instruct_expert"),
    benchmark:
        bench("instruct_expert")
    conda:
        "../envs/data.yaml"
    threads: resources_of("instruct")["threads"]
    resources:
        mem_mb=resources_of("instruct")["mem_mb"],
        runtime=resources_of("instruct")["runtime"],
    params:
        prompt=prompt_settings(),
        splits=["train"],
        oversample=config["instruct"]["oversample_rare"],
        recombined=0,
        seed=config["instruct"]["seed"],
        perturbed=config["instruct"]["perturbed_copies"],
    script:
        "../workflow/scripts/instruct.py"


rule no_finding_model:
    """The LLM labelers' No Finding as the experts decide it (expert.no_finding: learned): a report-level model on sentence embeddings."""
    input:
        reports=rules.ingest.output.reports,
        expert=rules.targets.output.expert,
        gold=rules.ingest.output.gold,
    output:
        directory(results("models/no_finding")),
    log:
        logs("no_finding_model"),
    benchmark:
        bench("no_finding_model")
    conda:
        "../envs/train.yaml"
    threads: resources_of("no_finding_model")["threads"]
    resources:
        mem_mb=resources_of("no_finding_model")["mem_mb"],
        runtime=resources_of("no_finding_model")["runtime"],
        gpu=resources_of("no_finding_model")["gpu"],
    params:
        settings=config["expert"]["no_finding_model"],
    script:
        "../workflow/scripts/no_finding_model.py"


rule expert_stage_model:
    """Expert corrections of the trained labelers (expert.stage: learned): per observation with enough expert positives, a report-level model over the labeler's label and the sentence embeddings."""
    input:
        reports=rules.ingest.output.reports,
        silver=silver_labels,
        expert=rules.targets.output.expert,
    output:
        directory(results("models/expert_stage")),
    log:
        logs("expert_stage_model"),
    benchmark:
        bench("expert_stage_model")
    conda:
        "../envs/train.yaml"
    threads: resources_of("expert_stage_model")["threads"]
    resources:
        mem_mb=resources_of("expert_stage_model")["mem_mb"],
        runtime=resources_of("expert_stage_model")["runtime"],
        gpu=resources_of("expert_stage_model")["gpu"],
    params:
        settings=config["expert"]["stage_model"],
    script:
        "../workflow/scripts/expert_stage_model.py"
