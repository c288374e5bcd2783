from cxrlabel.labelers.no_finding import NoFindingSettings, train_no_finding_on_split
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    settings = NoFindingSettings(**snakemake.params.settings, threads=snakemake.threads)
    train_no_finding_on_split(snakemake.input.reports, snakemake.input.expert, snakemake.input.gold, snakemake.output[0], settings)
