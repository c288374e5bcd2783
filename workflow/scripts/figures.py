import polars as pl

from cxrlabel.evaluation.figures import FigureStyle, difference_heatmap, flip_rate_heatmap, length_bars, per_observation_bars, reliability_diagram, rl_curves
from cxrlabel.runlog import logged
from cxrlabel.training.curves import CURVES_FILE

with logged(snakemake.log[0]):
    style, labels = FigureStyle(**snakemake.params.style), snakemake.params.labels
    per_observation = pl.read_csv(snakemake.input.weighted_f1)
    per_observation_bars(per_observation, labels, style, snakemake.output.bars)
    difference_heatmap(per_observation, snakemake.params.reference, snakemake.params.baselines, labels, style, snakemake.output.heatmap)
    length_bars(pl.read_csv(snakemake.input.by_length), labels, style, snakemake.output.by_length)
    flip_rate_heatmap(pl.read_csv(snakemake.input.robustness), labels, style, snakemake.output.robustness)
    if snakemake.params.rl_labelers:
        curves = pl.concat([pl.read_csv(f"{model}/{CURVES_FILE}") for model in snakemake.input.rl_models])
        rl_curves(curves, labels, style, snakemake.output.rl_curves)
    if snakemake.input.calibration:
        table, bins = (pl.read_csv(path) for path in snakemake.input.calibration)
        reliability_diagram(bins, table, labels, style, snakemake.output.reliability)
