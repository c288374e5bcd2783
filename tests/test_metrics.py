"""Metrics against hand-computed cases and scikit-learn; significance tests against scipy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import f1_score as sk_f1

from cxrlabel.evaluation.metrics import (
    cohen_kappa,
    errors_per_report,
    extraction_f1,
    label_matrix,
    length_tertiles,
    macro_f1_by_certainty,
    positive_f1_by_observation,
    weighted_f1,
    weighted_f1_by_observation,
)
from cxrlabel.evaluation.stats import compare_labelers, resample_weights
from cxrlabel.io.labels import labels_schema

nan = float("nan")


def test_weighted_f1_by_hand():
    gold = np.array([1, 1, 0, 0, -1, nan])
    pred = np.array([1, 0, 0, nan, -1, 1])
    # positive: TP 1, FP 1 (blank gold predicted positive), FN 1 -> 2/4 = 0.5
    # negative: TP 1, FP 1, FN 1 -> 0.5;  uncertain: TP 1 -> 1.0
    # weights: 2/5, 2/5, 1/5
    assert extraction_f1(gold, pred, 1.0) == pytest.approx(0.5)
    assert extraction_f1(gold, pred, 0.0) == pytest.approx(0.5)
    assert weighted_f1(gold, pred) == pytest.approx(0.4 * 0.5 + 0.4 * 0.5 + 0.2 * 1.0)
    assert weighted_f1(gold, pred, (1.0, 0.0)) == pytest.approx(0.5)


def test_weighted_f1_matches_scikit_learn():
    rng = np.random.default_rng(7)
    gold = rng.choice([1.0, 0.0, -1.0, nan], size=(400, 14), p=[0.2, 0.3, 0.1, 0.4])
    pred = np.where(rng.random((400, 14)) < 0.8, gold, rng.choice([1.0, 0.0, -1.0, nan], size=(400, 14)))
    ours = weighted_f1_by_observation(gold, pred)
    code = lambda m: np.where(np.isnan(m), 9, m).astype(int)  # noqa: E731
    for j, score in enumerate(ours.values()):
        g, p = code(gold[:, j]), code(pred[:, j])
        support = np.array([np.sum(g == c) for c in (1, 0, -1)])
        expected = sum(s * sk_f1(g == c, p == c) for s, c in zip(support, (1, 0, -1))) / support.sum()
        assert score == pytest.approx(expected)
        assert cohen_kappa(gold[:, [j]], pred[:, [j]]) == pytest.approx(cohen_kappa_score(g, p))


def test_no_finding_reduces_to_positive_f1():
    gold = np.array([1, nan, 1, nan])
    pred = np.array([1, 1, nan, nan])
    assert weighted_f1(gold, pred) == pytest.approx(extraction_f1(gold, pred, 1.0)) == pytest.approx(0.5)


def test_undefined_without_gold_support():
    assert np.isnan(weighted_f1(np.array([nan, nan]), np.array([1.0, nan])))
    assert np.isnan(positive_f1_by_observation(np.array([[nan], [0.0]]), np.array([[1.0], [1.0]]), ["Edema"])["Edema"])


def test_macro_by_certainty_and_errors():
    gold = np.array([[1, 0], [-1, nan], [0, 1]], dtype=float)
    pred = np.array([[1, 0], [nan, nan], [0, 0]], dtype=float)
    by = macro_f1_by_certainty(gold, pred, ["A", "B"])
    # positive: A 1.0 (TP1), B 0.0 (FN1) -> 0.5; negative: A 1.0, B 2/3 (TP1 FP1) -> 0.8333; uncertain: A 0.0
    assert by == pytest.approx({"positive": 0.5, "negative": (1 + 2 / 3) / 2, "uncertain": 0.0})
    assert errors_per_report(gold, pred).tolist() == [0, 1, 1]


def test_length_tertiles_split_in_thirds():
    bins = length_tertiles(np.arange(1, 10))
    assert bins.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_label_matrix_aligns_on_study_and_requires_every_gold_study():
    gold = pl.DataFrame([{"study_id": "a", "Edema": 1}, {"study_id": "b", "Edema": 0}], schema=labels_schema())
    pred = pl.DataFrame([{"study_id": "b", "Edema": 0}, {"study_id": "a"}, {"study_id": "z", "Edema": 1}], schema=labels_schema())
    g, p, ids = label_matrix(gold, pred, ["Edema"])
    assert ids == ["a", "b"] and g[:, 0].tolist() == [1.0, 0.0] and np.isnan(p[0, 0]) and p[1, 0] == 0.0
    with pytest.raises(ValueError, match="1 gold studies have no prediction"):
        label_matrix(gold, pred.filter(pl.col("study_id") != "a"), ["Edema"])


def test_paired_tests_match_scipy_and_bootstrap_is_seeded():
    from scipy import stats

    a = np.array([0.90, 0.85, 0.88, 0.95, 0.70, 0.80, nan])
    b = np.array([0.88, 0.80, 0.89, 0.90, 0.60, 0.79, 0.5])
    boot_a, boot_b = np.full(100, 0.85), np.full(100, 0.81)
    result = compare_labelers(a, b, boot_a, boot_b)
    assert result.n_observations == 6
    assert result.t_p_value == pytest.approx(stats.ttest_rel(a[:6], b[:6]).pvalue)
    assert result.wilcoxon_p_value == pytest.approx(stats.wilcoxon(a[:6], b[:6]).pvalue)
    assert result.bootstrap_p_value == 0.0 and result.bootstrap_low == pytest.approx(0.04)
    assert np.array_equal(resample_weights(10, 5, seed=3), resample_weights(10, 5, seed=3))
    assert resample_weights(10, 5, seed=3).sum(axis=1).tolist() == [10] * 5
