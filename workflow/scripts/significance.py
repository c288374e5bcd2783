from cxrlabel.evaluation.tables import write_significance_table
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_significance_table(
        snakemake.input.gold,
        snakemake.input.reports,
        {name: snakemake.input[f"predictions_{name}"] for name in snakemake.params.labelers},
        snakemake.output[0],
        snakemake.params.resamples,
        snakemake.params.seed,
    )
