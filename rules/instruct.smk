rule instruct:
    """Prompt/completion pairs (instruction + report -> serialized labels), one parquet per split."""
    input:
        reports=rules.ingest.output.reports,
        labels=training_labels,
    output:
        expand(results("instruct/instruct_{split}.parquet"), split=SPLITS),
    log:
        logs("instruct"),
    benchmark:
        bench("instruct")
    conda:
        "../envs/data.yaml"
    threads: resources_of("instruct")["threads"]
    resources:
        mem_mb=resources_of("instruct")["mem_mb"],
        runtime=resources_of("instruct")["runtime"],
    params:
        prompt=prompt_settings(),
        splits=SPLITS,
        oversample=config["instruct"]["oversample_rare"],
        recombined=config["instruct"]["recombined_reports"],
        seed=config["instruct"]["seed"],
        perturbed=config["instruct"]["perturbed_copies"],
    script:
        "../workflow/scripts/instruct.py"
