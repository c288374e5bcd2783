from cxrlabel.evaluation.tables import write_evaluation_tables
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_evaluation_tables(
        snakemake.input.gold,
        snakemake.input.silver,
        snakemake.input.reports,
        {name: snakemake.input[f"predictions_{name}"] for name in snakemake.params.labelers},
        dict(snakemake.output),
        snakemake.params.resamples,
        snakemake.params.seed,
    )
