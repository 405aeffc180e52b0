"""Paired tests of the PocketNet comparisons: pocket against full on the same cases.

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022) compare each
pocket network with its full counterpart by a Wilcoxon signed-rank test on the per-case metrics of the
cross-validation (Table I), and the COVIDx classifiers by their test AUC (Table II). Here the segmentation test
pairs cases by their id (never by list position), and the AUC comparison gets a bootstrap interval and a paired
bootstrap p-value, since one AUC per model has no per-case pairs to rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTest", "bootstrap_auc", "paired_bootstrap_auc", "stars", "wilcoxon_paired"]


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison: p-value, number of pairs, and a note when the test was not run as such."""

    p: float
    n: int
    note: str = ""


def stars(p: float) -> str:
    """The paper's significance marks: NS (p >= 0.05), * (< 0.05), ** (< 0.01), *** (< 0.001)."""
    if not np.isfinite(p) or p >= 0.05:
        return "NS"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*"


def wilcoxon_paired(a: Mapping[str, float], b: Mapping[str, float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``a`` against ``b``, paired by case id.

    Only ids present in both with finite values are paired. All differences zero (identical models) gives
    p = 1 with a note, where ``scipy.stats.wilcoxon`` would warn and return NaN; fewer than one pair gives NaN.
    """
    ids = sorted(k for k in a.keys() & b.keys() if np.isfinite(a[k]) and np.isfinite(b[k]))
    x = np.array([a[k] for k in ids], dtype=float)
    y = np.array([b[k] for k in ids], dtype=float)
    if not ids:
        return PairedTest(float("nan"), 0, "no case scored by both")
    if np.all(x == y):
        return PairedTest(1.0, len(ids), "all differences are zero: p = 1 by definition")
    return PairedTest(float(stats.wilcoxon(x, y).pvalue), len(ids))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties count one half."""
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    ranks = stats.rankdata(scores)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc(labels: Sequence[int], scores: Sequence[float], n: int = 2000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """AUC and its percentile bootstrap interval (cases resampled with replacement): ``(auc, low, high)``."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [_auc(y[i], s[i]) for i in rng.integers(0, len(y), size=(n, len(y)))]
    low, high = np.nanpercentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return _auc(y, s), float(low), float(high)


def paired_bootstrap_auc(labels: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float],
                         n: int = 2000, seed: int = 0) -> tuple[float, PairedTest]:
    """AUC(a) - AUC(b) on the same test cases, and a two-sided paired bootstrap p-value for it.

    Each draw resamples the cases once and scores both models on it; the p-value is twice the smaller share of
    draws on either side of zero (floored at 1/n). Identical scores give p = 1 with a note.
    """
    y = np.asarray(labels)
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    diff = _auc(y, a) - _auc(y, b)
    if np.array_equal(a, b):
        return diff, PairedTest(1.0, len(y), "identical scores: p = 1 by definition")
    rng = np.random.default_rng(seed)
    draws = np.array([_auc(y[i], a[i]) - _auc(y[i], b[i]) for i in rng.integers(0, len(y), size=(n, len(y)))])
    draws = draws[np.isfinite(draws)]
    p = min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0)))
    return diff, PairedTest(max(p, 1 / len(draws)), len(y))
