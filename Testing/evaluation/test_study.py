"""The study statistics: each figure against a direct computation, and a bootstrap that widens with run spread."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from graded_draws import graded_draws
from reactkd.evaluation.study import (
    classwise_ece,
    hierarchical_bootstrap,
    ordinal_c_index,
    run_level,
    run_metrics,
)


def cohort(n=300, seed=0, signal=1.5):
    return graded_draws(n, seed, signal)


def test_classwise_ece_by_hand():
    y = np.array([0, 1, 2, 0])
    probs = np.array([[0.95, 0.05, 0.0], [0.15, 0.85, 0.0], [0.05, 0.05, 0.9], [0.55, 0.45, 0.0]])
    # class 0: bins 9 (p .95, hit 1), 1 (.15, 0), 0 (.05, 0), 5 (.55, 1): |1-.95|+|0-.15|+|0-.05|+|1-.55| = .7
    # class 1: .05,.85,.05,.45 vs 0,1,0,0: bins 0 (two cases: |0-.1|), 8 (|1-.85|), 4 (|0-.45|) = .7
    # class 2: 0,0,.9,0 vs 0,0,1,0: |1-.9| = .1
    assert classwise_ece(y, probs) == pytest.approx((0.7 + 0.7 + 0.1) / 3 / 4)


def test_ordinal_c_index_counts_ordered_pairs():
    y, probs = cohort(40, seed=1)
    score = probs @ np.arange(3)
    pairs = [(i, j) for i, j in itertools.permutations(range(40), 2) if y[i] > y[j]]
    expected = np.mean([1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0 for i, j in pairs])
    assert ordinal_c_index(y, probs) == pytest.approx(expected)
    two = y[y < 2], probs[y < 2]
    assert ordinal_c_index(*two) == pytest.approx(roc_auc_score(two[0], two[1] @ np.arange(3)))


def test_run_metrics_and_run_level_interval():
    y, probs = cohort()
    metrics = run_metrics(y, probs)
    assert metrics["auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert metrics["auc_moderate_vs_rest"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    assert 0 < metrics["nll"] < 2 and 0 < metrics["brier"] < 1 and 0.5 < metrics["c_index"] < 1
    level = run_level([0.80, 0.82, 0.78, 0.84])
    assert level["mean"] == pytest.approx(0.81) and level["n_runs"] == 4
    half = 3.182446 * np.std([0.80, 0.82, 0.78, 0.84], ddof=1) / 2  # t(0.975, 3) * sd / sqrt(4)
    assert level["ci95"] == pytest.approx([0.81 - half, 0.81 + half], abs=1e-5)
    assert run_level([0.8])["ci95"] == [None, None]


def test_hierarchical_bootstrap_includes_the_spread_between_runs():
    y, _ = cohort(400, seed=2)
    same = np.stack([cohort(400, seed=2)[1]] * 6)                         # six identical runs
    spread = np.stack([cohort(400, seed=2, signal=s)[1] for s in (0.6, 1.0, 1.4, 1.8, 2.2, 2.6)])
    narrow, wide = hierarchical_bootstrap(y, same, n_bootstrap=400), hierarchical_bootstrap(y, spread, n_bootstrap=400)
    assert narrow["ci95"][0] < narrow["estimate"] < narrow["ci95"][1]
    assert np.diff(wide["ci95"])[0] > 1.5 * np.diff(narrow["ci95"])[0]
    paired = hierarchical_bootstrap(y, same, same, n_bootstrap=200)
    assert paired["estimate"] == 0 and paired["ci95"] == [0.0, 0.0] and paired["p_not_better"] == 1.0
    better = hierarchical_bootstrap(y, spread[:3], spread[3:], n_bootstrap=400)
    assert better["estimate"] > 0 and better["ci95"][0] > 0 and better["p_not_better"] < 0.05
    with pytest.raises(ValueError, match="same runs"):
        hierarchical_bootstrap(y, same, same[:2])
