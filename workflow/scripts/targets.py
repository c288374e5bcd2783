from cxrlabel.runlog import logged
from cxrlabel.training.targets import write_targets

with logged(snakemake.log[0]):
    inputs, out = snakemake.input, snakemake.output
    write_targets(inputs.silver, inputs.gold, inputs.reports, inputs.get("expert_file"), out.corrected, out.expert, out.summary)
