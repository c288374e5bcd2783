"""Label-extraction metrics of the CheXpert/CheXbert evaluation protocol, one function per metric.

Labels are compared as matrices of shape (reports, observations) holding 1.0 (positive),
0.0 (negative), -1.0 (uncertain) and NaN (blank). :func:`label_matrix` builds them from a
gold and a predicted labels table joined on ``study_id``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from cxrlabel.observations import OBSERVATIONS

CERTAINTIES: dict[str, float] = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0}


def label_matrix(gold: pl.DataFrame, predicted: pl.DataFrame, observations: Sequence[str] = OBSERVATIONS) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Gold and predicted label matrices for the studies of ``gold``, in gold order.

    A gold study with no prediction is an error (a labeler must label every report).
    """
    joined = gold.select("study_id", *observations).join(
        predicted.select("study_id", *observations), on="study_id", how="left", suffix="__pred", maintain_order="left"
    )
    unlabeled = set(gold["study_id"]) - set(predicted["study_id"])
    if unlabeled:
        raise ValueError(f"{len(unlabeled)} gold studies have no prediction, e.g. {sorted(unlabeled)[:3]}")
    as_float = lambda names: joined.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy()  # noqa: E731
    return as_float(observations), as_float([f"{n}__pred" for n in observations]), list(joined["study_id"])


def f1_score(gold: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of boolean vectors: 2 TP / (2 TP + FP + FN); 0.0 when there is nothing to find or find."""
    return float(_f1(*(np.sum(x) for x in _confusion(gold, predicted))))


def extraction_f1(gold: np.ndarray, predicted: np.ndarray, certainty: float) -> float:
    """F1 of one extraction task for one observation: class ``certainty`` against every other class.

    Blank (NaN) counts as "the rest", like the other two classes.
    """
    return f1_score(gold == certainty, predicted == certainty)


def extraction_counts(gold: np.ndarray, predicted: np.ndarray, certainties: Sequence[float] = (1.0, 0.0, -1.0)) -> np.ndarray:
    """Per report, observation and certainty: (TP, FP, FN) of that extraction task, shape (n, O, C, 3).

    Summed over reports (optionally weighted, as a bootstrap resample does) they give every F1 below.
    """
    tasks = [_confusion(gold == c, predicted == c) for c in certainties]
    return np.stack([np.stack(task, axis=-1) for task in tasks], axis=2).astype(np.int32)


def weighted_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Weighted F1 per observation from summed counts of shape (..., O, C, 3): see :func:`weighted_f1`."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    support = tp + fn
    total = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (support * _f1(tp, fp, fn)).sum(axis=-1) / total, np.nan)


def weighted_f1(gold: np.ndarray, predicted: np.ndarray, certainties: Sequence[float] = (1.0, 0.0, -1.0)) -> float:
    """CheXbert's weighted F1 of one observation (vectors of one column).

    The extraction F1s of the ``certainties`` (positive, negative, uncertain by default),
    averaged with weights equal to each class's share of the gold labels in those classes
    (blank gold labels carry no weight). NaN when gold has none of those classes.
    For No Finding, whose gold is only ever positive, this is the positive F1.
    """
    counts = extraction_counts(gold[:, None], predicted[:, None], certainties).sum(axis=0)
    return float(weighted_f1_from_counts(counts)[0])


def weighted_f1_by_observation(gold: np.ndarray, predicted: np.ndarray, observations: Sequence[str] = OBSERVATIONS, certainties: Sequence[float] = (1.0, 0.0, -1.0)) -> dict[str, float]:
    """:func:`weighted_f1` of each observation (columns of the matrices)."""
    scores = weighted_f1_from_counts(extraction_counts(gold, predicted, certainties).sum(axis=0))
    return dict(zip(observations, scores.tolist()))


def _confusion(gold: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return gold & predicted, ~gold & predicted, gold & ~predicted


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def positive_f1_by_observation(gold: np.ndarray, predicted: np.ndarray, observations: Sequence[str] = OBSERVATIONS) -> dict[str, float]:
    """Positive-extraction F1 of each observation: the only task defined for positive-only gold
    (indexer labels, where blank means "not indexed as present"). NaN with no gold positive."""
    return {
        name: extraction_f1(gold[:, j], predicted[:, j], 1.0) if np.any(gold[:, j] == 1.0) else float("nan")
        for j, name in enumerate(observations)
    }


def macro_f1_by_certainty(gold: np.ndarray, predicted: np.ndarray, observations: Sequence[str] = OBSERVATIONS) -> dict[str, float]:
    """Per certainty level, the mean extraction F1 over the observations whose gold has that class."""
    result = {}
    for word, certainty in CERTAINTIES.items():
        scores = [extraction_f1(gold[:, j], predicted[:, j], certainty) for j in range(len(observations)) if np.any(gold[:, j] == certainty)]
        result[word] = float(np.mean(scores)) if scores else float("nan")
    return result


def cohen_kappa(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Cohen's kappa over the four classes (blank included): (p_o - p_e) / (1 - p_e)."""
    codes = lambda m: np.where(np.isnan(m), 2.0, m)  # noqa: E731  blank as its own class
    g, p = codes(gold), codes(predicted)
    classes = np.array([1.0, 0.0, -1.0, 2.0])
    observed = float(np.mean(g == p))
    expected = float(sum(np.mean(g == c) * np.mean(p == c) for c in classes))
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def errors_per_report(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """For each report, the number of observations whose predicted class (blank included) differs from gold."""
    return np.sum(class_differs(gold, predicted), axis=1)


def class_differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per cell, whether two label matrices hold different classes; blank (NaN) is a class of its own."""
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def label_flip_rate(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Share of report x observation cells whose class changes between the labels of the clean
    reports and of the same reports perturbed (rows aligned); blank is a class, so blank ->
    negative is a flip. NaN when there are no cells."""
    return float(np.mean(class_differs(clean, perturbed))) if clean.size else float("nan")


def expected_flip_rate(clean: np.ndarray, perturbed: np.ndarray, expected: np.ndarray) -> float:
    """Share of the cells expected to change (boolean mask ``expected``, e.g. a negation removed
    from the report) whose class did change. NaN when no cell is expected to change."""
    return float(np.mean(class_differs(clean, perturbed)[expected])) if np.any(expected) else float("nan")


def mean_ignoring_nan(scores: dict[str, float]) -> float:
    """The headline number: the mean of per-observation scores that are defined."""
    values = np.array(list(scores.values()), dtype=float)
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def mean_weighted_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over observations of the weighted F1 (positive, negative, uncertain): the score the
    trained labelers (BERT, SFT) select their epoch on, against the validate split's silver labels."""
    return mean_ignoring_nan(weighted_f1_by_observation(gold, predicted))


def length_tertiles(n_tokens: np.ndarray) -> np.ndarray:
    """Report-length bin of each report: 0 short, 1 medium, 2 long, cut at the 1/3 and 2/3 quantiles."""
    cuts = np.quantile(n_tokens, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, n_tokens, side="right")

