"""Confidence of a label and its calibration: how often a label given with confidence p is right.

A labeler with scores (:attr:`cxrlabel.labelers.Labeled.scores`) gives, per non-blank label, an
uncalibrated logit for each class it chose between. The label's **confidence** at temperature T is
the softmax of those logits divided by T, taken at the chosen class. A label is **correct** when
its class equals the reference class; a blank reference counts as wrong (the labeler said something
the reference does not). Calibration fits one T per labeler (temperature scaling) on a fitting set
that is never the test split, and the test split measures the **expected calibration error** before
(T = 1) and after.

Tables (:func:`scores_frame` and :func:`label_rows`) are polars; everything else is numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from cxrlabel.observations import OBSERVATIONS

#: Where a temperature was fitted: the validate split's expert labels, or its silver labels.
FittedOn = Literal["gold", "silver"]

#: The long scores table of a labeler (``predictions/<labeler>_scores.parquet``): one row per
#: (study, non-blank label, class the labeler chose between), ``class`` null for blank.
SCORES_SCHEMA = {"study_id": pl.String, "observation": pl.String, "label": pl.Int8, "class": pl.Int8, "logit": pl.Float64}


def softmax_at(logits: np.ndarray, chosen: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` taken at column ``chosen`` of each row.

    ``logits`` is (n, k); a class a row did not choose between is ``-inf`` (probability 0).
    """
    scaled = np.asarray(logits, dtype=float) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return weights[np.arange(len(scaled)), chosen] / weights.sum(axis=1)


def confidence(logits: Mapping[int | None, float], chosen: int | None, temperature: float = 1.0) -> float:
    """The confidence of one label: softmax of ``logits`` (label code -> logit) divided by
    ``temperature``, at the ``chosen`` class: exp(z_c / T) / sum_k exp(z_k / T)."""
    codes = list(logits)
    row = np.array([[logits[code] for code in codes]])
    return float(softmax_at(row, np.array([codes.index(chosen)]), temperature)[0])


def label_confidences(scores: Mapping[str, Mapping[int | None, float]], labels: Mapping[str, int | None], temperature: float = 1.0) -> dict[str, float]:
    """Per scored non-blank label of one report, its :func:`confidence` at ``temperature``
    (``scores``: :attr:`cxrlabel.labelers.Labeled.scores`; ``labels``: its labels). A label whose
    class is not among its scored classes has no confidence (left out)."""
    return {name: confidence(logits, labels[name], temperature) for name, logits in scores.items() if labels.get(name) is not None and labels[name] in logits}


def label_correct(predicted: int | None, reference: int | None) -> bool:
    """Whether a non-blank predicted label is right: its class equals the reference class
    (a blank reference is wrong: the labeler stated what the reference does not)."""
    return reference is not None and predicted == reference


def binary_nll(confidences: np.ndarray, correct: np.ndarray) -> float:
    """Mean negative log-likelihood of correctness when a label is right with probability
    its confidence: -mean(y log p + (1 - y) log(1 - p))."""
    p = np.clip(np.asarray(confidences, dtype=float), 1e-12, 1 - 1e-12)
    y = np.asarray(correct, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_temperature(logits: np.ndarray, chosen: np.ndarray, correct: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T > 0 minimising the binary negative log-likelihood of correctness
    (:func:`binary_nll`) under the confidence ``softmax(logits / T)[chosen]``; searched over
    log T in ``bounds`` (scipy's bounded scalar minimiser).

    Why not the usual multi-class NLL of the reference class: the reference class need not be
    among the classes the labeler chose between (an LLM writing the ``mentioned`` format chooses
    among positive / negative / uncertain only after deciding to mention the observation, and the
    reference may be blank), so only the correctness of the chosen label is defined for every label.
    ``logits`` is (n, k) with ``-inf`` for a class a row did not have; no labels: T = 1.
    """
    from scipy.optimize import minimize_scalar

    logits, chosen, correct = np.asarray(logits, dtype=float), np.asarray(chosen, dtype=int), np.asarray(correct, dtype=bool)
    if len(logits) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: binary_nll(softmax_at(logits, chosen, math.exp(log_t)), correct),
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> pl.DataFrame:
    """Equal-width confidence bins over [0, 1] (the last one closed): ``bin``, ``lower``,
    ``upper``, ``n`` (labels in it), ``accuracy`` (share correct) and ``mean_confidence``
    (null in an empty bin)."""
    p, y = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum())
        rows.append({
            "bin": b, "lower": float(edges[b]), "upper": float(edges[b + 1]), "n": n,
            "accuracy": float(y[members].mean()) if n else None,
            "mean_confidence": float(p[members].mean()) if n else None,
        })
    return pl.DataFrame(rows, schema={"bin": pl.Int64, "lower": pl.Float64, "upper": pl.Float64, "n": pl.Int64, "accuracy": pl.Float64, "mean_confidence": pl.Float64}, orient="row")


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: over ``n_bins`` equal-width bins of confidence on [0, 1], the sum of
    (labels in the bin / all labels) * |accuracy in the bin - mean confidence in the bin|
    (a confidence on a bin edge falls in the lower bin; 0 falls in the first). No labels: NaN."""
    n = len(confidences)
    if n == 0:
        return float("nan")
    bins = reliability_bins(confidences, correct, n_bins).filter(pl.col("n") > 0)
    return float(sum(row["n"] / n * abs(row["accuracy"] - row["mean_confidence"]) for row in bins.iter_rows(named=True)))


# --- the scores table -----------------------------------------------------------------------

def scores_frame(study_ids: Sequence[str], labels: Sequence[Mapping[str, int | None]], scores: Sequence[Mapping[str, Mapping[int | None, float]] | None]) -> pl.DataFrame:
    """The long scores table (:data:`SCORES_SCHEMA`) of labeled reports: one row per study,
    scored non-blank label and class. Long, because the classes differ between labelers and
    observations (the BERT heads: 4 classes with blank, No Finding 2; the LLM: 3 certainty words).
    A label whose class is not among its scored classes is left out (it has no confidence)."""
    rows = [
        (study_id, name, report_labels[name], code, float(logit))
        for study_id, report_labels, report_scores in zip(study_ids, labels, scores)
        if report_scores
        for name in OBSERVATIONS
        if report_labels.get(name) is not None and report_labels[name] in report_scores.get(name, {})
        for code, logit in report_scores[name].items()
    ]
    return pl.DataFrame(rows, schema=SCORES_SCHEMA, orient="row")


def label_rows(scores: pl.DataFrame, reference: pl.DataFrame | None = None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The scored labels of a scores table, one per (study, observation), in a stable order:
    the table (``study_id``, ``observation``, ``label``, and ``reference`` if ``reference`` (a labels
    table: ``study_id`` + 14) is given), the (n, k) logits (``-inf`` where a label had fewer classes)
    and the chosen column of each row. Studies missing from ``reference`` are left out."""
    grouped = (
        scores.group_by("study_id", "observation", maintain_order=True)
        .agg(pl.col("label").first(), pl.col("class"), pl.col("logit"))
        .sort("study_id", "observation")
    )
    if reference is not None:
        long = reference.unpivot(index="study_id", on=list(OBSERVATIONS), variable_name="observation", value_name="reference").with_columns(pl.col("reference").cast(pl.Int8))
        grouped = grouped.join(long, on=["study_id", "observation"], how="inner", maintain_order="left")
    width = max((len(c) for c in grouped["class"].to_list()), default=1)
    logits = np.full((grouped.height, width), -np.inf)
    chosen = np.zeros(grouped.height, dtype=int)
    for i, (label, classes, values) in enumerate(zip(grouped["label"].to_list(), grouped["class"].to_list(), grouped["logit"].to_list())):
        logits[i, : len(values)] = values
        chosen[i] = classes.index(label)
    return grouped.drop("class", "logit"), logits, chosen


def correctness(table: pl.DataFrame) -> np.ndarray:
    """:func:`label_correct` of each row of :func:`label_rows`' table (``label``, ``reference``)."""
    return np.array([label_correct(p, r) for p, r in zip(table["label"].to_list(), table["reference"].to_list())], dtype=bool)


# --- the fitted record ----------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """A labeler's fitted temperature (``models/<labeler>.calibration.json``): where it was fitted
    (the validate split's ``gold`` or ``silver`` labels), on how many labels, and the fitting set's
    ECE before (T = 1) and after."""

    labeler: str
    temperature: float
    fitted_on: FittedOn
    n_labels: int
    ece_before: float
    ece_after: float
    n_bins: int

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls(**json.loads(Path(path).read_text()))


def fitting_reference(gold: pl.DataFrame, gold_kind: str, silver: pl.DataFrame, study_ids: Sequence[str]) -> tuple[FittedOn, pl.DataFrame]:
    """Which labels a temperature is fitted on for the reports ``study_ids`` (the validate split's):
    the expert labels if they are 4-class (``gold_kind`` ``full``) and cover every one of those
    reports, else the silver labels."""
    if gold_kind == "full" and len(study_ids) and set(study_ids) <= set(gold["study_id"].to_list()):
        return "gold", gold
    return "silver", silver


def calibrate(labeler: str, scores: pl.DataFrame, reference: pl.DataFrame, fitted_on: FittedOn, n_bins: int) -> Calibration:
    """Fit ``labeler``'s temperature on its scores of the fitting reports against ``reference``."""
    table, logits, chosen = label_rows(scores, reference)
    correct = correctness(table)
    temperature = fit_temperature(logits, chosen, correct)
    return Calibration(
        labeler=labeler, temperature=temperature, fitted_on=fitted_on, n_labels=table.height,
        ece_before=expected_calibration_error(softmax_at(logits, chosen, 1.0), correct, n_bins),
        ece_after=expected_calibration_error(softmax_at(logits, chosen, temperature), correct, n_bins),
        n_bins=n_bins,
    )


#: The columns of ``tables/table9_calibration.csv``.
TABLE_COLUMNS = (
    "labeler", "fitted_on", "temperature", "evaluated_on", "n_labels", "ece_before", "ece_after",
    "accuracy", "mean_confidence_before", "mean_confidence_after",
)


def calibration_table(entries: Sequence[tuple[Calibration, pl.DataFrame]], reference: pl.DataFrame, evaluated_on: str, n_bins: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Table 9 and the reliability bins on the test split: per labeler (its :class:`Calibration`
    and its test scores table) the ECE before and after its temperature against ``reference``
    (the test split's labels, ``evaluated_on`` says which), accuracy and mean confidences; the
    bins (``labeler``, ``stage`` before/after, then :func:`reliability_bins`' columns)."""
    rows, bins = [], []
    for calibration, scores in entries:
        table, logits, chosen = label_rows(scores, reference)
        correct = correctness(table)
        before, after = softmax_at(logits, chosen, 1.0), softmax_at(logits, chosen, calibration.temperature)
        rows.append({
            "labeler": calibration.labeler, "fitted_on": calibration.fitted_on, "temperature": calibration.temperature,
            "evaluated_on": evaluated_on, "n_labels": table.height,
            "ece_before": expected_calibration_error(before, correct, n_bins), "ece_after": expected_calibration_error(after, correct, n_bins),
            "accuracy": float(correct.mean()) if len(correct) else float("nan"),
            "mean_confidence_before": float(before.mean()) if len(before) else float("nan"),
            "mean_confidence_after": float(after.mean()) if len(after) else float("nan"),
        })
        for stage, p in (("before", before), ("after", after)):
            bins.append(reliability_bins(p, correct, n_bins).select(pl.lit(calibration.labeler).alias("labeler"), pl.lit(stage).alias("stage"), pl.all()))
    table9 = pl.DataFrame(rows, schema={name: (pl.String if name in ("labeler", "fitted_on", "evaluated_on") else pl.Int64 if name == "n_labels" else pl.Float64) for name in TABLE_COLUMNS}, orient="row")
    return table9, pl.concat(bins) if bins else pl.DataFrame()


# --- the workflow's steps -------------------------------------------------------------------

def split_ids(reports_path: str, split: str) -> list[str]:
    return pl.read_parquet(reports_path, columns=["study_id", "split"]).filter(pl.col("split") == split)["study_id"].to_list()


def calibrate_split(labeler: str, scores_path: str, reports_path: str, gold_path: str, silver_path: str, n_bins: int, split: str = "validate") -> Calibration:
    """The calibrate rule's work: fit ``labeler``'s temperature on its scores of the ``split``
    reports (validate; never test) against :func:`fitting_reference`'s labels."""
    from cxrlabel.io.labels import read_labels

    if split == "test":
        raise ValueError("a temperature is never fitted on the test split")
    ids = split_ids(reports_path, split)
    gold, kind = read_labels(gold_path)
    silver, _ = read_labels(silver_path)
    fitted_on, reference = fitting_reference(gold, kind, silver, ids)
    reference = reference.filter(pl.col("study_id").is_in(ids))
    return calibrate(labeler, pl.read_parquet(scores_path), reference, fitted_on, n_bins)


def test_reference(reports_path: str, gold_path: str, silver_path: str) -> tuple[str, pl.DataFrame]:
    """The labels the test split's calibration is measured against: the expert labels if they are
    4-class, else (positive-only indexer labels, whose blank is not "not mentioned") the silver
    labels; which one, and the test split's rows of it."""
    from cxrlabel.io.labels import read_labels

    ids = split_ids(reports_path, "test")
    gold, kind = read_labels(gold_path)
    name, reference = ("gold", gold) if kind == "full" else ("silver", read_labels(silver_path)[0])
    return name, reference.filter(pl.col("study_id").is_in(ids))


def calibration_tables(labelers: Sequence[str], calibration_paths: Sequence[str], scores_paths: Sequence[str], reports_path: str, gold_path: str, silver_path: str, n_bins: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The calibration_table rule's work: :func:`calibration_table` on the test split."""
    evaluated_on, reference = test_reference(reports_path, gold_path, silver_path)
    entries = []
    for name, calibration_path, scores_path in zip(labelers, calibration_paths, scores_paths):
        calibration = Calibration.load(calibration_path)
        if calibration.labeler != name:
            raise ValueError(f"{calibration_path}: the calibration of {calibration.labeler}, not {name}")
        entries.append((calibration, pl.read_parquet(scores_path)))
    return calibration_table(entries, reference, evaluated_on, n_bins)
