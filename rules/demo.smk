rule demo_corpus:
    """Generate the demo corpus in MIMIC-CXR's file formats, with known ground truth."""
    output:
        reports=f"{config['demo']['out_dir']}/mimic-cxr-reports.zip",
        silver_labels=f"{config['demo']['out_dir']}/mimic-cxr-2.0.0-chexpert.csv.gz",
        split=f"{config['demo']['out_dir']}/mimic-cxr-2.0.0-split.csv.gz",
        gold_labels=f"{config['demo']['out_dir']}/mimic-cxr-2.1.0-test-set-labeled.csv",
    log:
        logs("demo_corpus"),
    benchmark:
        bench("demo_corpus")
    conda:
        "../envs/data.yaml"
    threads: resources_of("demo_corpus")["threads"]
    resources:
        mem_mb=resources_of("demo_corpus")["mem_mb"],
        runtime=resources_of("demo_corpus")["runtime"],
    params:
        demo=config["demo"],
    script:
        "../workflow/scripts/demo_corpus.py"
