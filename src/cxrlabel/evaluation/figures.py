"""Figures of the papers from the evaluation tables: per-observation F1 bars, the F1-difference
heatmap between the LLM and each baseline, F1 by report length, the robustness heatmap, and the
training curves of the RL labelers."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import seaborn as sns  # noqa: E402


@dataclass(frozen=True)
class FigureStyle:
    """Figure settings (config key ``figures``): changing them reruns only the figure rule."""

    dpi: int = 150
    width: float = 10.0
    height: float = 5.0
    palette: str = "colorblind"
    heatmap_cmap: str = "rocket_r"
    font_scale: float = 1.0


def labeler_columns(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("observation", "metric", "certainty", "length_bin", "tokens", "n_reports")]


def per_observation_bars(table: pl.DataFrame, labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """Grouped bars of each observation's F1 by labeler, observations sorted by their mean F1."""
    rows = table.filter(pl.col("observation") != "Average")
    long = rows.unpivot(index="observation", on=labeler_columns(table), variable_name="labeler", value_name="F1")
    order = rows.with_columns(pl.mean_horizontal(labeler_columns(table)).alias("mean")).sort("mean", descending=True)["observation"].to_list()
    long = long.with_columns(pl.col("labeler").replace(labels))
    sns.set_theme(style="whitegrid", font_scale=style.font_scale)
    fig, ax = plt.subplots(figsize=(style.width, style.height))
    sns.barplot(data=_records(long), x="observation", y="F1", hue="labeler", order=order, palette=style.palette, ax=ax)
    ax.set_xlabel("observation")
    ax.set_ylabel(table["metric"][0])
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="x", rotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    _legend_above(ax, len(labeler_columns(table)))
    _save(fig, path, style)


def difference_heatmap(table: pl.DataFrame, reference: str, baselines: list[str], labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """Absolute F1 difference between ``reference`` (the LLM) and each baseline, per observation.

    Observations are sorted by their largest difference; cells are annotated.
    """
    others = [c for c in baselines if c in table.columns and c != reference]
    rows = table.filter(pl.col("observation") != "Average")
    diffs = np.abs(rows.select(others).to_numpy() - rows[reference].to_numpy()[:, None])
    order = np.argsort(-np.nan_to_num(diffs.max(axis=1)))
    sns.set_theme(style="white", font_scale=style.font_scale)
    fig, ax = plt.subplots(figsize=(2.2 * len(others) + 4.5, style.height + 1))
    sns.heatmap(
        diffs[order], annot=True, fmt=".3f", cmap=style.heatmap_cmap, vmin=0, ax=ax,
        xticklabels=[textwrap.fill(f"vs {labels.get(o, o)}", 14) for o in others], yticklabels=[rows["observation"][int(i)] for i in order],
        cbar_kws={"label": f"|Δ {table['metric'][0]}|"},
    )
    ax.set_xlabel("baseline")
    ax.set_ylabel("observation")
    ax.set_title(f"{labels.get(reference, reference)}: absolute F1 difference to each baseline")
    _save(fig, path, style)


def length_bars(table: pl.DataFrame, labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """F1 by report-length tertile and labeler."""
    long = table.unpivot(index=["length_bin", "tokens"], on=labeler_columns(table), variable_name="labeler", value_name="F1")
    long = long.with_columns(pl.col("labeler").replace(labels), (pl.col("length_bin") + "\n(" + pl.col("tokens") + " tokens)").alias("bin"))
    sns.set_theme(style="whitegrid", font_scale=style.font_scale)
    fig, ax = plt.subplots(figsize=(style.width * 0.8, style.height))
    sns.barplot(data=_records(long), x="bin", y="F1", hue="labeler", palette=style.palette, ax=ax)
    ax.set_xlabel("report length (tertile)")
    ax.set_ylabel(table["metric"][0])
    ax.set_ylim(0, 1.05)
    _legend_above(ax, len(labeler_columns(table)))
    _save(fig, path, style)


def flip_rate_heatmap(table: pl.DataFrame, labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """Label flip rate of each labeler (rows) under each meaning-preserving perturbation (columns),
    from the robustness table; a cell that misses its bar is marked with a star."""
    rows = table.filter(pl.col("meaning_preserving"))
    labelers = rows["labeler"].unique(maintain_order=True).to_list()
    perturbations = rows["perturbation"].unique(maintain_order=True).to_list()
    cell = {(r["labeler"], r["perturbation"]): r for r in rows.iter_rows(named=True)}
    rates = np.array([[_or_nan(cell.get((lab, p), {}).get("flip_rate")) for p in perturbations] for lab in labelers])
    notes = [[_flip_note(cell.get((lab, p), {})) for p in perturbations] for lab in labelers]
    sns.set_theme(style="white", font_scale=style.font_scale)
    fig, ax = plt.subplots(figsize=(max(style.width, 0.9 * len(perturbations) + 3), 0.6 * len(labelers) + 2.5))
    sns.heatmap(
        # the colour scale reaches at least 5%, so that a 0.1% cell looks as good as it is
        rates, annot=np.array(notes, dtype=object), fmt="", cmap=style.heatmap_cmap, vmin=0, vmax=max(0.05, float(np.nanmax(rates, initial=0))), ax=ax,
        xticklabels=perturbations, yticklabels=[labels.get(lab, lab) for lab in labelers],
        cbar_kws={"label": "flip rate"},
    )
    ax.set_xlabel("perturbation (meaning-preserving)")
    ax.set_ylabel("labeler")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_title("Share of labels that flip when only the report's form changes (* misses its bar)")
    _save(fig, path, style)


#: The panels of :func:`rl_curves`: a column of ``rl_curves.csv`` (cxrlabel.training.curves.CURVE_COLUMNS) and its axis label.
CURVE_PANELS = {"reward": "mean reward (no KL term)", "kl": "KL to the SFT model, per token", "format_error_rate": "format-error rate"}


def rl_curves(curves: pl.DataFrame, labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """Reward, KL to the SFT model and format-error rate of the sampled completions against the
    training step, one line per RL algorithm (the ``rl_curves.csv`` of each run, one below the
    other), one panel each. A reward that climbs while the format errors or the KL climb with it
    is the shape of reward hacking; the evaluation's guard table says what the labels did."""
    long = curves.with_columns(pl.col("algorithm").replace(labels).alias("labeler"))
    n_labelers = long["labeler"].n_unique()
    sns.set_theme(style="whitegrid", font_scale=style.font_scale)
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(style.width, style.height * 0.8))
    for ax, (column, label) in zip(axes, CURVE_PANELS.items()):
        sns.lineplot(data=_records(long.select("step", "labeler", column)), x="step", y=column, hue="labeler", estimator=None, marker="o", palette=style.palette, ax=ax)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        if ax.get_legend() is not None:  # none where the column is null throughout (no KL when beta is 0)
            ax.get_legend().remove()
    axes[list(CURVE_PANELS).index("format_error_rate")].set_ylim(-0.02, 1.02)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(n_labelers, 4), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=style.dpi, bbox_inches="tight")
    plt.close(fig)


def reliability_diagram(bins: pl.DataFrame, table: pl.DataFrame, labels: dict[str, str], style: FigureStyle, path: str) -> None:
    """One panel per labeler (``tables/reliability_bins.csv``): accuracy against mean confidence
    of each non-empty bin, before (T = 1) and after calibration, markers sized by the bin's labels,
    and the diagonal of a calibrated labeler; the panel title gives the ECE before -> after
    (``tables/table9_calibration.csv``)."""
    names = list(dict.fromkeys(bins["labeler"].to_list()))
    ece = {row["labeler"]: row for row in table.iter_rows(named=True)}
    sns.set_theme(style="whitegrid", font_scale=style.font_scale)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(style.width, style.width / max(1, len(names)) + 0.8), squeeze=False)
    colors = sns.color_palette(style.palette, 2)
    for ax, name in zip(axes[0], names):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        for color, stage in zip(colors, ("before", "after")):
            rows = bins.filter(pl.col("labeler") == name, pl.col("stage") == stage, pl.col("n") > 0)
            total = max(1, rows["n"].sum())
            ax.plot(rows["mean_confidence"].to_list(), rows["accuracy"].to_list(), color=color, linewidth=1)
            ax.scatter(rows["mean_confidence"].to_list(), rows["accuracy"].to_list(), s=[10 + 300 * n / total for n in rows["n"].to_list()], color=color,
                       label="T = 1" if stage == "before" else f"T = {ece[name]['temperature']:.2f}" if name in ece else stage)
        title = labels.get(name, name)
        if name in ece:
            title += f"\nECE {ece[name]['ece_before']:.3f} -> {ece[name]['ece_after']:.3f}"
        ax.set(title=title, xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", aspect="equal")
        legend = ax.legend(loc="upper left", frameon=False, fontsize="small")
        for handle in legend.legend_handles:  # one marker size in the legend, whatever the bins'
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([30])
    _save(fig, path, style)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _flip_note(row: dict) -> str:
    if row.get("flip_rate") is None or np.isnan(row["flip_rate"]):
        return ""
    return f"{row['flip_rate']:.3f}" + ("*" if row.get("passes") is False else "")


def _legend_above(ax: plt.Axes, n_entries: int) -> None:
    """The legend in a row above the plot, where it hides no bar."""
    sns.move_legend(ax, "lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(n_entries, 4), title=None, frameon=False)


def _records(frame: pl.DataFrame) -> dict[str, list]:
    """Columns as lists: seaborn's data without a pandas dependency in the package."""
    return frame.to_dict(as_series=False)


def _save(fig: plt.Figure, path: str, style: FigureStyle) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=style.dpi)
    plt.close(fig)
