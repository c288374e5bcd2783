rule ingest:
    """Read the corpus into the reports table and the label tables; account for every record."""
    input:
        unpack(ingest_inputs),
    output:
        reports=results("corpus/reports.parquet"),
        silver=results("corpus/labels_silver.parquet"),
        gold=results("corpus/labels_gold.parquet"),
        dropped=results("corpus/dropped.parquet"),
        summary=results("corpus/ingest_summary.json"),
    log:
        logs("ingest"),
    benchmark:
        bench("ingest")
    conda:
        "../envs/data.yaml"
    threads: resources_of("ingest")["threads"]
    resources:
        mem_mb=resources_of("ingest")["mem_mb"],
        runtime=resources_of("ingest")["runtime"],
    params:
        corpus=config["corpus"],
    script:
        "../workflow/scripts/ingest.py"
