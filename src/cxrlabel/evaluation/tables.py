"""The papers' tables from gold labels and the predictions of several labelers.

Full gold (four classes) gives CheXbert's weighted F1 over positive, negative and uncertain.
Positive-only gold (indexer labels, where blank means "not indexed as present") defines only
positive extraction: every table then scores positive F1 and says so in its ``metric`` column.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from cxrlabel.evaluation.metrics import (
    cohen_kappa,
    errors_per_report,
    extraction_counts,
    label_matrix,
    length_tertiles,
    macro_f1_by_certainty,
    weighted_f1_from_counts,
)
from cxrlabel.evaluation.stats import bootstrap_headline, compare_labelers, percentile_interval, resample_weights
from cxrlabel.io.labels import LabelKind, read_labels
from cxrlabel.observations import OBSERVATIONS

#: Row order of paper 1's tables.
PAPER_ORDER = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices", "No Finding",
)
ALL_CERTAINTIES = (1.0, 0.0, -1.0)
POSITIVE_NEGATIVE = (1.0, 0.0)
LENGTH_BINS = ("short", "medium", "long")


@dataclass(frozen=True)
class Scored:
    """One labeler's label matrices against gold, and its per-report extraction counts."""

    gold: np.ndarray
    predicted: np.ndarray
    counts: np.ndarray  # (n, O, C, 3) for the certainties the gold defines
    format_errors: int
    fallbacks: int


def certainties_for(kind: LabelKind, requested: tuple[float, ...] = ALL_CERTAINTIES) -> tuple[float, ...]:
    return requested if kind == "full" else (1.0,)


def metric_name(kind: LabelKind, requested: tuple[float, ...] = ALL_CERTAINTIES) -> str:
    if kind == "positive_only":
        return "positive F1 (gold is positive-only)"
    return "weighted F1" + ("" if requested == ALL_CERTAINTIES else " (positive and negative only)")


def score(gold: pl.DataFrame, kind: LabelKind, predictions: pl.DataFrame) -> Scored:
    g, p, _ = label_matrix(gold, predictions)
    flags = gold.select("study_id").join(predictions, on="study_id", how="left")
    return Scored(g, p, extraction_counts(g, p, certainties_for(kind)), int(flags["format_error"].sum()), int(flags["fallback_used"].sum()))


def per_observation_table(scored: dict[str, Scored], kind: LabelKind, requested: tuple[float, ...] = ALL_CERTAINTIES) -> pl.DataFrame:
    """Paper 1, Tables 1 and 2: observations as rows (paper order, then Average), labelers as columns."""
    columns = {}
    certainties = certainties_for(kind, requested)
    for name, s in scored.items():
        by_obs = dict(zip(OBSERVATIONS, weighted_f1_from_counts(extraction_counts(s.gold, s.predicted, certainties).sum(axis=0)).tolist()))
        columns[name] = [by_obs[o] for o in PAPER_ORDER] + [float(np.nanmean(list(by_obs.values())))]
    return pl.DataFrame({"observation": [*PAPER_ORDER, "Average"], **columns}).with_columns(pl.lit(metric_name(kind, requested)).alias("metric"))


def confidence_table(scored: dict[str, Scored], kind: LabelKind, n_resamples: int, seed: int) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """The headline with its 95% bootstrap interval per labeler, and the resampled headlines."""
    n = next(iter(scored.values())).gold.shape[0]
    weights = resample_weights(n, n_resamples, seed)
    boots = {name: bootstrap_headline(s.counts, weights) for name, s in scored.items()}
    rows = []
    for name, s in scored.items():
        low, high = percentile_interval(boots[name])
        headline = float(np.nanmean(weighted_f1_from_counts(s.counts.sum(axis=0))))
        rows.append({"labeler": name, "metric": metric_name(kind), "average": headline, "ci_low": low, "ci_high": high, "n_reports": n, "n_resamples": n_resamples})
    return pl.DataFrame(rows), boots


def significance_table(scored: dict[str, Scored], boots: dict[str, np.ndarray], kind: LabelKind) -> pl.DataFrame:
    """Paper 1, Table 3: every pair of labelers, paired t test and Wilcoxon over the 14
    per-observation scores, and the paired bootstrap over reports."""
    per_obs = {name: weighted_f1_from_counts(s.counts.sum(axis=0)) for name, s in scored.items()}
    rows = [
        {"labeler_a": a, "labeler_b": b, "metric": metric_name(kind), **asdict(compare_labelers(per_obs[a], per_obs[b], boots[a], boots[b]))}
        for a, b in itertools.combinations(scored, 2)
    ]
    return pl.DataFrame(rows)


def certainty_table(scored: dict[str, Scored], kind: LabelKind) -> pl.DataFrame:
    """Paper 2, Table 4: macro F1 over observations for each certainty level the gold defines."""
    levels = ("positive", "negative", "uncertain") if kind == "full" else ("positive",)
    columns = {name: [macro_f1_by_certainty(s.gold, s.predicted)[level] for level in levels] for name, s in scored.items()}
    return pl.DataFrame({"certainty": levels, **columns}).with_columns(pl.lit("macro extraction F1").alias("metric"))


def length_table(scored: dict[str, Scored], n_tokens: np.ndarray, kind: LabelKind) -> pl.DataFrame:
    """Paper 2, Table 5: the headline within report-length tertiles (word-level tokens)."""
    bins = length_tertiles(n_tokens)
    ranges = [f"{int(n_tokens[bins == b].min())}-{int(n_tokens[bins == b].max())}" if np.any(bins == b) else "" for b in range(3)]
    columns = {
        name: [float(np.nanmean(weighted_f1_from_counts(s.counts[bins == b].sum(axis=0)))) if np.any(bins == b) else float("nan") for b in range(3)]
        for name, s in scored.items()
    }
    counts = [int(np.sum(bins == b)) for b in range(3)]
    return pl.DataFrame({"length_bin": LENGTH_BINS, "tokens": ranges, "n_reports": counts, **columns}).with_columns(pl.lit(metric_name(kind)).alias("metric"))


def errors_table(scored: dict[str, Scored], kind: LabelKind) -> pl.DataFrame:
    """Paper 2, Table 2 and 6: errors per report, % perfect reports, Cohen's kappa, format errors.

    Errors need full gold (a blank indexer label is not a known class): NaN for positive-only gold.
    """
    rows = []
    for name, s in scored.items():
        errors = errors_per_report(s.gold, s.predicted).astype(float) if kind == "full" else np.full(len(s.gold), np.nan)
        rows.append(
            {
                "labeler": name,
                "errors_per_report": float(np.mean(errors)),
                "perfect_reports_pct": float(np.mean(errors == 0) * 100) if kind == "full" else float("nan"),
                "cohen_kappa": cohen_kappa(s.gold, s.predicted) if kind == "full" else float("nan"),
                "format_error_pct": 100 * s.format_errors / len(s.gold),
                "fallback_pct": 100 * s.fallbacks / len(s.gold),
                "n_reports": len(s.gold),
            }
        )
    return pl.DataFrame(rows)


def rl_guard_table(scored: dict[str, Scored], reference: str = "sft") -> pl.DataFrame:
    """The reward-hacking guard: what each LLM labeler (every labeler but rule and bert: SFT and
    the RL algorithms) does to the form and the number of its labels on the test reports, against
    the SFT labeler it was tuned from, with the expert's labels as a last row for reference.

    A policy that learned to please its reward rather than to label shows it here before it shows
    in F1: more malformed outputs (``format_error_pct``), more positives per report
    (``positives_per_report``, label 1 over the 14 observations), or more or fewer observations
    labeled at all (``labeled_per_report``, non-blank labels). ``*_vs_sft``: the labeler's value
    minus ``reference``'s (null without it). Completion length is not here: the predictions
    tables do not record it (the RL training curves do, for the sampled completions).
    """
    llm = {name: s for name, s in scored.items() if name not in ("rule", "bert")}
    rows = [
        {"labeler": name, "n_reports": len(s.predicted), "format_error_pct": 100 * s.format_errors / len(s.predicted),
         "positives_per_report": float(np.mean(np.sum(s.predicted == 1, axis=1))), "labeled_per_report": float(np.mean(np.sum(~np.isnan(s.predicted), axis=1)))}
        for name, s in llm.items()
    ]
    if llm:  # the same reports' gold labels, in every Scored
        gold = next(iter(llm.values())).gold
        rows.append({"labeler": "gold", "n_reports": len(gold), "format_error_pct": None,
                     "positives_per_report": float(np.mean(np.sum(gold == 1, axis=1))), "labeled_per_report": float(np.mean(np.sum(~np.isnan(gold), axis=1)))})
    schema = {"labeler": pl.String, "n_reports": pl.Int64, "format_error_pct": pl.Float64, "positives_per_report": pl.Float64, "labeled_per_report": pl.Float64}
    table = pl.DataFrame(rows, schema=schema)
    base = table.filter(pl.col("labeler") == reference)
    measures = ["format_error_pct", "positives_per_report", "labeled_per_report"]
    return table.with_columns((pl.col(m) - (base[m][0] if base.height else None)).alias(f"{m}_vs_{reference}") for m in measures)


def agreement_table(silver_path: str, test_ids: list[str], predictions: dict[str, str]) -> pl.DataFrame:
    """How well each labeler reproduces the silver labels it was trained on (the corpus's CheXpert
    labels or the rule labeler's), on the test reports: positive F1 and weighted F1 per observation.

    A learned labeler cannot be better than its teacher by imitating it; this table tells
    imitation (high agreement) from reading the reports differently (low agreement).
    """
    silver, _ = read_labels(silver_path)
    silver = silver.join(pl.DataFrame({"study_id": test_ids}), on="study_id", how="semi")
    scored = {name: score(silver, "full", read_labels(path)[0]) for name, path in predictions.items()}
    return pl.concat(
        per_observation_table(scored, "full", certainties).with_columns(pl.lit(f"{metric} against the silver labels").alias("metric"))
        for certainties, metric in (((1.0,), "positive F1"), (ALL_CERTAINTIES, "weighted F1"))
    )


def load_scored(gold_path: str, reports: pl.DataFrame, predictions: dict[str, str]) -> tuple[dict[str, Scored], LabelKind, list[str]]:
    """Score every labeler's predictions file against the gold labels of the test split.

    Gold labels of other splits (OpenI's indexer labels cover every report; the demo's cover
    the validate split for simulated expert preferences) never enter the evaluation.
    """
    gold, kind = read_labels(gold_path)
    gold = gold.join(reports.filter(pl.col("split") == "test").select("study_id"), on="study_id", how="semi")
    scored = {name: score(gold, kind, read_labels(path)[0]) for name, path in predictions.items()}
    return scored, kind, gold["study_id"].to_list()


def write_evaluation_tables(gold_path: str, silver_path: str, reports_path: str, predictions: dict[str, str], out: dict[str, str], n_resamples: int, seed: int) -> None:
    """Write paper 1's Tables 1-2 (with bootstrap intervals), paper 2's Tables 4-6, the
    agreement with the silver labels (Table 7) and the reward-hacking guard (Table 8) as CSV."""
    reports = pl.read_parquet(reports_path, columns=["study_id", "split", "n_tokens"])
    scored, kind, study_ids = load_scored(gold_path, reports, predictions)
    lengths = pl.DataFrame({"study_id": study_ids}).join(reports, on="study_id", how="left", maintain_order="left")
    per_observation_table(scored, kind).write_csv(out["weighted_f1"], float_precision=4)
    per_observation_table(scored, kind, POSITIVE_NEGATIVE).write_csv(out["positive_negative_f1"], float_precision=4)
    confidence_table(scored, kind, n_resamples, seed)[0].write_csv(out["confidence"], float_precision=4)
    certainty_table(scored, kind).write_csv(out["by_certainty"], float_precision=4)
    length_table(scored, lengths["n_tokens"].to_numpy(), kind).write_csv(out["by_length"], float_precision=4)
    errors_table(scored, kind).write_csv(out["errors"], float_precision=4)
    agreement_table(silver_path, study_ids, predictions).write_csv(out["agreement"], float_precision=4)
    rl_guard_table(scored).write_csv(out["rl_guard"], float_precision=4)


def write_significance_table(gold_path: str, reports_path: str, predictions: dict[str, str], path: str, n_resamples: int, seed: int) -> None:
    """Write paper 1's Table 3 for every pair of labelers."""
    scored, kind, _ = load_scored(gold_path, pl.read_parquet(reports_path, columns=["study_id", "split"]), predictions)
    boots = confidence_table(scored, kind, n_resamples, seed)[1]
    significance_table(scored, boots, kind).write_csv(path, float_precision=6)
