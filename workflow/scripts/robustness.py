from cxrlabel.evaluation.robustness import robustness_table
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    labelers = snakemake.params.labelers
    robustness_table(
        snakemake.input.gold,
        {name: snakemake.input[f"clean_{name}"] for name in labelers},
        snakemake.input.reports,
        {name: snakemake.input[f"perturbed_{name}"] for name in labelers},
        snakemake.params.max_flip_rate,
        snakemake.params.min_control_flip_rate,
    ).write_csv(snakemake.output[0], float_precision=4)
