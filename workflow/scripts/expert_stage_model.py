from cxrlabel.labelers.expert_stage import ExpertStageSettings, train_expert_stage_on_split
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    settings = ExpertStageSettings(**snakemake.params.settings, threads=snakemake.threads)
    train_expert_stage_on_split(snakemake.input.reports, snakemake.input.silver, snakemake.input.expert, snakemake.output[0], settings)
