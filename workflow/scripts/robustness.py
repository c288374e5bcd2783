from cxrlabel.evaluation.robustness import robustness_table
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    labelers, perturbations = snakemake.params.labelers, snakemake.params.perturbations
    robustness_table(
        snakemake.input.gold,
        {name: snakemake.input[f"clean_{name}"] for name in labelers},
        {name: snakemake.input[f"reports_{name}"] for name in perturbations},
        {(name, p): snakemake.input[f"perturbed_{name}_{p}"] for name in labelers for p in perturbations},
        snakemake.params.max_flip_rate,
        snakemake.params.min_control_flip_rate,
    ).write_csv(snakemake.output[0], float_precision=4)
