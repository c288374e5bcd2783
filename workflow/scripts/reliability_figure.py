import polars as pl

from cxrlabel.evaluation.figures import FigureStyle, reliability_diagram
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    style = FigureStyle(**snakemake.params.style)
    reliability_diagram(pl.read_csv(snakemake.input.bins), pl.read_csv(snakemake.input.table), snakemake.params.labels, style, snakemake.output[0])
