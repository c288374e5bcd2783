rule instruct:
    """Prompt/completion pairs (instruction + report -> serialized labels), one parquet per split."""
    input:
        reports=rules.ingest.output.reports,
        labels=instruct_labels,
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
        fmt=config["instruct"]["format"],
        splits=SPLITS,
        unit=config["instruct"]["unit"],
        recombined=config["instruct"]["recombined_reports"],
        seed=config["instruct"]["seed"],
    script:
        "../workflow/scripts/instruct.py"
