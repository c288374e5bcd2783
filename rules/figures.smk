rule figures:
    """The papers' figures from the evaluation tables (styling from config key `figures`)."""
    input:
        weighted_f1=rules.evaluate.output.weighted_f1,
        by_length=rules.evaluate.output.by_length,
    output:
        bars=report(
            results("figures/f1_by_observation.png"),
            caption="../workflow/report/f1_by_observation.rst",
            category="Figures",
        ),
        heatmap=report(
            results("figures/f1_difference_heatmap.png"),
            caption="../workflow/report/f1_difference_heatmap.rst",
            category="Figures",
        ),
        by_length=report(
            results("figures/f1_by_length.png"),
            caption="../workflow/report/f1_by_length.rst",
            category="Figures",
        ),
    log:
        logs("figures"),
    benchmark:
        bench("figures")
    conda:
        "../envs/eval.yaml"
    threads: resources_of("figures")["threads"]
    resources:
        mem_mb=resources_of("figures")["mem_mb"],
        runtime=resources_of("figures")["runtime"],
    params:
        style=config["figures"]["style"],
        reference=config["figures"]["reference"],
        baselines=config["figures"]["baselines"],
        labels=config["figures"]["labels"],
    script:
        "../workflow/scripts/figures.py"
