from cxrlabel.evaluation.calibration import calibration_tables
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    table, bins = calibration_tables(snakemake.params.labelers, i.calibrations, i.scores, i.reports, i.gold, i.silver, snakemake.params.bins)
    table.write_csv(snakemake.output.table)
    bins.write_csv(snakemake.output.bins)
