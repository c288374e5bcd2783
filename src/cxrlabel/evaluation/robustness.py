"""The robustness table: how often each labeler's labels flip when only the form of a report changes.

For a meaning-preserving perturbation (cxrlabel.perturb.PERTURBATIONS) the flip rate is read over
the report x observation cells of the reports the perturbation changed: a report it left as it was
cannot flip, and counting it would make a perturbation that touches few reports look robust.
``flip_rate_all`` is the same count over every cell of the test split. For a control
(cxrlabel.perturb.CONTROLS) the flip rate is the share of the cells expected to change that did.
F1 is the evaluation's headline (tables.metric_name) on the test split's gold labels, for the clean
and the perturbed reports (a labeler labels only the changed reports again: an unchanged report
keeps its clean prediction); a control changes what the gold labels describe, so it has no
perturbed F1.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cxrlabel.evaluation.metrics import expected_flip_rate, label_flip_rate, label_matrix, weighted_f1_from_counts
from cxrlabel.evaluation.tables import metric_name, score
from cxrlabel.io.labels import LabelKind, read_labels
from cxrlabel.observations import OBSERVATIONS
from cxrlabel.perturb import ALL_PERTURBATIONS


def headline_f1(gold: pl.DataFrame, kind: LabelKind, predictions: pl.DataFrame) -> float:
    """The evaluation's headline: the mean over observations of the per-observation F1."""
    return float(np.nanmean(weighted_f1_from_counts(score(gold, kind, predictions).counts.sum(axis=0))))


def expected_mask(perturbed_reports: pl.DataFrame) -> np.ndarray:
    """Boolean (reports, observations): the cells a control is expected to change."""
    expected = perturbed_reports["expected_flips"].to_list()
    return np.array([[name in flips for name in OBSERVATIONS] for flips in expected], dtype=bool).reshape(-1, len(OBSERVATIONS))


def aligned_labels(reports: pl.DataFrame, clean: pl.DataFrame, perturbed: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Label matrices of the clean and the perturbed predictions, rows in the order of ``reports``."""
    ids = reports.select("study_id")
    missing = ids.join(clean, on="study_id", how="anti")
    if missing.height:
        raise ValueError(f"{missing.height} perturbed reports have no clean prediction, e.g. {missing['study_id'].head(3).to_list()}")
    clean_labels, perturbed_labels, _ = label_matrix(ids.join(clean, on="study_id", how="left", maintain_order="left"), perturbed)
    return clean_labels, perturbed_labels


def robustness_row(
    labeler: str, perturbation: str, clean: pl.DataFrame, perturbed: pl.DataFrame, reports: pl.DataFrame,
    gold: pl.DataFrame, kind: LabelKind, bar: float | None,
) -> dict[str, object]:
    """One labeler under one perturbation: flip rate, F1 clean and perturbed, and the verdict against ``bar``
    (a maximum flip rate, or for a control the minimum share of expected flips)."""
    spec = ALL_PERTURBATIONS[perturbation]
    clean_labels, perturbed_labels = aligned_labels(reports, clean, perturbed)
    changed = reports["changed"].to_numpy()
    if spec.meaning_preserving:
        cells = int(changed.sum()) * len(OBSERVATIONS)
        flip_rate = label_flip_rate(clean_labels[changed], perturbed_labels[changed])
        perturbed_f1 = headline_f1(gold, kind, perturbed)
    else:
        expected = expected_mask(reports)
        cells = int(expected.sum())
        flip_rate = expected_flip_rate(clean_labels, perturbed_labels, expected)
        perturbed_f1 = None
    passes = None if bar is None or np.isnan(flip_rate) else bool(flip_rate <= bar if spec.meaning_preserving else flip_rate >= bar)
    return {
        "labeler": labeler, "perturbation": perturbation, "family": spec.family, "meaning_preserving": spec.meaning_preserving,
        "reports": reports.height, "changed_reports": int(changed.sum()), "cells": cells, "flip_rate": flip_rate,
        "flip_rate_all": label_flip_rate(clean_labels, perturbed_labels), "clean_f1": headline_f1(gold, kind, clean),
        "perturbed_f1": perturbed_f1, "metric": metric_name(kind), "bar": bar, "passes": passes,
        "verdict": verdict(flip_rate, bar, spec.meaning_preserving, passes),
    }


def verdict(flip_rate: float, bar: float | None, meaning_preserving: bool, passes: bool | None) -> str:
    """The row in words, so that a miss is stated, not only flagged."""
    if np.isnan(flip_rate):
        return "no changed cell: not measured"
    if passes is None:
        return "no bar configured"
    relation = ("<=" if passes else ">") if meaning_preserving else (">=" if passes else "<")
    return f"{'meets' if passes else 'MISSES'} the bar: {flip_rate:.4f} {relation} {bar}"


def perturbed_predictions(reports: pl.DataFrame, clean: pl.DataFrame, changed: pl.DataFrame) -> pl.DataFrame:
    """A labeler's predictions of one perturbed test split (``reports``: ``study_id``, ``changed``):
    of a changed report its prediction in ``changed`` (cxrlabel.predict.predict_perturbed, this
    perturbation's rows), of an unchanged one its clean prediction (the same text, and labelers
    are deterministic). Columns of ``clean``."""
    relabeled = reports.filter(pl.col("changed")).select("study_id")
    missing = relabeled.join(changed, on="study_id", how="anti")
    if missing.height:
        raise ValueError(f"{missing.height} changed reports have no perturbed prediction, e.g. {missing['study_id'].head(3).to_list()}")
    unchanged = clean.join(reports.filter(~pl.col("changed")), on="study_id", how="semi")
    return pl.concat([unchanged, changed.join(relabeled, on="study_id", how="semi").select(clean.columns)])


def robustness_table(
    gold_path: str, clean: dict[str, str], perturbed_reports: str, perturbed: dict[str, str],
    max_flip_rate: dict[str, float], min_control_flip_rate: float,
) -> pl.DataFrame:
    """Every labeler of ``clean`` under every perturbation of the perturbed reports table
    (cxrlabel.perturb.perturbed_reports_table, test split): paths of each labeler's clean
    predictions, of the perturbed reports and of each labeler's perturbed predictions
    (cxrlabel.predict.predict_perturbed: the changed reports only)."""
    gold, kind = read_labels(gold_path)
    reports = pl.read_parquet(perturbed_reports, columns=["study_id", "perturbation", "changed", "expected_flips"])
    tables = {name: reports.filter(pl.col("perturbation") == name) for name in reports["perturbation"].unique(maintain_order=True)}
    rows = []
    for labeler, clean_path in clean.items():
        clean_predictions, relabeled = read_labels(clean_path)[0], read_labels(perturbed[labeler])[0]
        for perturbation, table in tables.items():
            bar = max_flip_rate.get(labeler) if ALL_PERTURBATIONS[perturbation].meaning_preserving else min_control_flip_rate
            predictions = perturbed_predictions(table, clean_predictions, relabeled.filter(pl.col("perturbation") == perturbation))
            test_gold = gold.join(table.select("study_id"), on="study_id", how="semi")
            rows.append(robustness_row(labeler, perturbation, clean_predictions, predictions, table, test_gold, kind, bar))
    return pl.DataFrame(rows, schema_overrides={"bar": pl.Float64, "perturbed_f1": pl.Float64, "passes": pl.Boolean})
