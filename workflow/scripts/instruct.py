from cxrlabel.instruct import PromptSettings, write_instruction_sets
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    write_instruction_sets(
        snakemake.input.reports,
        snakemake.input.labels,
        PromptSettings(**snakemake.params.prompt),
        dict(zip(snakemake.params.splits, snakemake.output)),
        snakemake.params.oversample,
        snakemake.params.recombined,
        snakemake.params.seed,
        snakemake.params.perturbed,
    )
