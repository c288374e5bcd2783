rule evaluate:
    """Paper 1's Tables 1-2 (with bootstrap intervals), paper 2's Tables 4-6, the agreement with the silver labels and the reward-hacking guard, as CSV."""
    input:
        unpack(evaluation_inputs),
    output:
        weighted_f1=results("tables/table1_weighted_f1.csv"),
        positive_negative_f1=results("tables/table2_positive_negative_f1.csv"),
        confidence=results("tables/table1_average_ci.csv"),
        by_certainty=results("tables/table4_f1_by_certainty.csv"),
        by_length=results("tables/table5_f1_by_length.csv"),
        errors=results("tables/table6_errors_per_report.csv"),
        agreement=results("tables/table7_agreement_with_silver.csv"),
        rl_guard=results("tables/table8_rl_guard.csv"),
    log:
        logs("evaluate"),
    benchmark:
        bench("evaluate")
    conda:
        "../envs/eval.yaml"
    threads: resources_of("evaluate")["threads"]
    resources:
        mem_mb=resources_of("evaluate")["mem_mb"],
        runtime=resources_of("evaluate")["runtime"],
    params:
        labelers=config["evaluation"]["labelers"],
        resamples=config["evaluation"]["bootstrap_resamples"],
        seed=config["evaluation"]["seed"],
    script:
        "../workflow/scripts/evaluate.py"


rule significance:
    """Paper 1's Table 3: paired t test, Wilcoxon signed-rank and paired bootstrap for every pair of labelers."""
    input:
        unpack(evaluation_inputs),
    output:
        results("tables/table3_significance.csv"),
    log:
        logs("significance"),
    benchmark:
        bench("significance")
    conda:
        "../envs/eval.yaml"
    threads: resources_of("significance")["threads"]
    resources:
        mem_mb=resources_of("significance")["mem_mb"],
        runtime=resources_of("significance")["runtime"],
    params:
        labelers=config["evaluation"]["labelers"],
        resamples=config["evaluation"]["bootstrap_resamples"],
        seed=config["evaluation"]["seed"],
    script:
        "../workflow/scripts/significance.py"
