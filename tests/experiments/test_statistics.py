"""The paired tests of the PocketNet tables: Wilcoxon by case id, the paper's stars, bootstrap AUC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from common.experiments.statistics import (
    bootstrap_auc,
    paired_bootstrap_auc,
    stars,
    wilcoxon_paired,
)


def test_wilcoxon_pairs_by_case_id_not_by_order():
    """Six cases, pocket better on every one: the exact two-sided p is 2 / 2**6; the dict order must not matter."""
    full = {"c1": 0.80, "c2": 0.70, "c3": 0.90, "c4": 0.60, "c5": 0.75, "c6": 0.85}
    gain = {"c1": 0.01, "c2": 0.02, "c3": 0.03, "c4": 0.04, "c5": 0.05, "c6": 0.06}
    pocket = {k: full[k] + gain[k] for k in reversed(list(full))}
    test = wilcoxon_paired(pocket, full)
    assert test.n == 6
    assert test.p == pytest.approx(2 / 2**6)
    ids = sorted(full)
    assert test.p == pytest.approx(stats.wilcoxon([pocket[k] for k in ids], [full[k] for k in ids]).pvalue)
    # pairing by position (the reversed order) would give another answer
    by_position = stats.wilcoxon(list(pocket.values()), list(full.values())).pvalue
    assert by_position != pytest.approx(test.p)


def test_wilcoxon_uses_only_cases_both_scored():
    a = {"x": 1.0, "y": 2.0, "z": float("nan"), "only_a": 5.0}
    b = {"x": 0.5, "y": 2.5, "z": 1.0, "only_b": 3.0}
    assert wilcoxon_paired(a, b).n == 2


def test_identical_models_give_p_1_and_say_so():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7}
    test = wilcoxon_paired(scores, dict(scores))
    assert test.p == 1.0 and test.n == 3 and "zero" in test.note
    assert np.isnan(wilcoxon_paired({"a": 1.0}, {"b": 1.0}).p)


@pytest.mark.parametrize("p, mark", [(0.2, "NS"), (0.05, "NS"), (0.049, "*"), (0.009, "**"), (0.0009, "***"),
                                     (float("nan"), "NS")])
def test_the_papers_stars(p, mark):
    assert stars(p) == mark


def test_bootstrap_auc_of_a_perfect_and_a_random_classifier():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    perfect = labels + rng.uniform(0, 0.5, 100)
    auc, low, high = bootstrap_auc(labels, perfect, n=200)
    assert (auc, low, high) == (1.0, 1.0, 1.0)
    noise = rng.uniform(size=100)
    auc, low, high = bootstrap_auc(labels, noise, n=500)
    assert low < auc < high and low < 0.5 < high
    # the rank formula is the area under the ROC curve: compare with the trapezoid over the curve's points
    thresholds = np.r_[np.inf, np.sort(noise)[::-1]]
    tpr = [(noise[labels == 1] >= t).mean() for t in thresholds]
    fpr = [(noise[labels == 0] >= t).mean() for t in thresholds]
    assert auc == pytest.approx(np.trapezoid(tpr, fpr))


def test_paired_bootstrap_p_of_a_clearly_better_and_an_identical_model():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    good = labels + rng.normal(0, 0.5, 200)
    poor = labels + rng.normal(0, 3.0, 200)
    diff, test = paired_bootstrap_auc(labels, good, poor, n=500)
    assert diff > 0.1 and test.p < 0.01
    diff, test = paired_bootstrap_auc(labels, good, good)
    assert diff == 0.0 and test.p == 1.0 and test.note
