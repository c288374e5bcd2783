rule predict_rule:
    """Label every report with the rule-based labeler (also the silver labels of corpora without any)."""
    input:
        reports=rules.ingest.output.reports,
    output:
        results("predictions/rule.parquet"),
    log:
        logs("predict_rule"),
    benchmark:
        bench("predict_rule")
    conda:
        "../envs/data.yaml"
    threads: resources_of("predict_rule")["threads"]
    resources:
        mem_mb=resources_of("predict_rule")["mem_mb"],
        runtime=resources_of("predict_rule")["runtime"],
    script:
        "../workflow/scripts/predict_rule.py"
