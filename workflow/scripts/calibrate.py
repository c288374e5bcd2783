import logging

from cxrlabel.evaluation.calibration import calibrate_split
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    calibration = calibrate_split(snakemake.wildcards.labeler, i.scores, i.reports, i.gold, i.silver, snakemake.params.bins)
    logging.info("%s", calibration)
    calibration.save(snakemake.output[0])
