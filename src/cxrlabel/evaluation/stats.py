"""Uncertainty and significance: bootstrap over reports, paired tests over observations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxrlabel.evaluation.metrics import weighted_f1_from_counts


def resample_weights(n_reports: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each report is drawn in each bootstrap resample (with replacement), shape (B, n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_reports, np.full(n_reports, 1 / n_reports), size=n_resamples).astype(np.float64)


def bootstrap_headline(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The headline (mean weighted F1 over observations) in each resample: counts (n, O, C, 3) -> (B,)."""
    resampled = np.einsum("bn,nocx->bocx", weights, counts)
    return np.nanmean(weighted_f1_from_counts(resampled), axis=1)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples."""
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Labeler A versus labeler B on the same reports."""

    mean_difference: float  # headline A - headline B
    t_statistic: float
    t_p_value: float
    wilcoxon_statistic: float
    wilcoxon_p_value: float
    bootstrap_low: float
    bootstrap_high: float
    bootstrap_p_value: float
    n_observations: int


def compare_labelers(scores_a: np.ndarray, scores_b: np.ndarray, boot_a: np.ndarray, boot_b: np.ndarray) -> PairedComparison:
    """Paired t test and Wilcoxon signed-rank test over the per-observation F1s (observations
    undefined for either labeler are left out), and a paired bootstrap over reports.

    ``boot_a``/``boot_b`` are headlines of the same resamples. The bootstrap p value is
    two-sided: twice the share of resampled differences on the other side of zero.
    """
    defined = ~np.isnan(scores_a) & ~np.isnan(scores_b)
    a, b = scores_a[defined], scores_b[defined]
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b) if np.any(a != b) else None
    differences = boot_a - boot_b
    observed = float(np.mean(a) - np.mean(b))
    other_side = np.mean(differences <= 0) if observed > 0 else np.mean(differences >= 0)
    low, high = percentile_interval(differences)
    return PairedComparison(
        mean_difference=observed,
        t_statistic=float(t.statistic),
        t_p_value=float(t.pvalue),
        wilcoxon_statistic=float(w.statistic) if w else float("nan"),
        wilcoxon_p_value=float(w.pvalue) if w else 1.0,
        bootstrap_low=low,
        bootstrap_high=high,
        bootstrap_p_value=float(min(1.0, 2 * other_side)),
        n_observations=int(defined.sum()),
    )
