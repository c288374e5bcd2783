rule figures:
    """The papers' figures from the evaluation tables, the robustness heatmap, and the RL training curves (styling from config key `figures`)."""
    input:
        weighted_f1=rules.evaluate.output.weighted_f1,
        by_length=rules.evaluate.output.by_length,
        robustness=rules.robustness.output[0],
        rl_models=[results(f"models/{name}") for name in rl_labelers()],
    output:
        **rl_curves_figure(),
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
        robustness=report(
            results("figures/robustness_flip_rates.png"),
            caption="../workflow/report/robustness_flip_rates.rst",
            category="Robustness",
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
        rl_labelers=rl_labelers(),
    script:
        "../workflow/scripts/figures.py"
