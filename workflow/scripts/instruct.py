from cxrlabel.instruct import write_instruction_sets
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_instruction_sets(
        snakemake.input.reports,
        snakemake.input.labels,
        snakemake.params.fmt,
        dict(zip(snakemake.params.splits, snakemake.output)),
        snakemake.params.unit,
        snakemake.params.recombined,
        snakemake.params.seed,
    )
