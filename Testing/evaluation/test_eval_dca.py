"""Decision curve analysis: agreement with the `dcurves` package, treat-all/none formulas, multiclass."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from reactkd.evaluation.dca import (
    DEFAULT_THRESHOLDS,
    decision_curves,
    net_benefit,
    treat_all_net_benefit,
    treat_none_net_benefit,
)

NAMES = ("well", "moderate", "poor")


def _dcurves_net_benefit(y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    dcurves = pytest.importorskip("dcurves")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"outcome": y.astype(bool), "model": prob})
    table = dcurves.dca(data=frame, outcome="outcome", modelnames=["model"], thresholds=list(thresholds))
    return {name: table.loc[table["model"] == name, "net_benefit"].to_numpy(dtype=float)
            for name in ("model", "all", "none")}


def test_net_benefit_matches_dcurves_on_its_reference_data():
    dcurves = pytest.importorskip("dcurves")
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(os.path.join(dcurves.data, "df_binary.csv"))
    y = frame["cancer"].to_numpy().astype(bool)
    prob = frame["cancerpredmarker"].to_numpy(dtype=float)
    t = DEFAULT_THRESHOLDS
    reference = _dcurves_net_benefit(y, prob, t)
    assert np.max(np.abs(net_benefit(y, prob, t) - reference["model"])) < 1e-9
    assert np.max(np.abs(treat_all_net_benefit(y.mean(), t) - reference["all"])) < 1e-9
    assert np.max(np.abs(treat_none_net_benefit(t) - reference["none"])) < 1e-9


def test_net_benefit_matches_dcurves_with_ties_at_thresholds():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    # Probabilities on the 0.05 grid coincide with thresholds: both must treat "prob >= pt" as positive.
    prob = np.clip(np.round(0.3 * y + rng.random(300) * 0.7, 2), 0.01, 0.99)
    t = np.round(np.arange(0.05, 0.96, 0.05), 2)
    reference = _dcurves_net_benefit(y, prob, t)
    assert np.max(np.abs(net_benefit(y, prob, t) - reference["model"])) < 1e-9


def test_net_benefit_by_hand():
    y = np.array([1, 0, 1, 0, 0])
    prob = np.array([0.9, 0.6, 0.4, 0.2, 0.5])
    t = np.array([0.3, 0.5, 0.8])
    # pt=0.3: treated {0.9, 0.6, 0.4, 0.5}: TP 2, FP 2; pt=0.5: {0.9, 0.6, 0.5}: TP 1, FP 2; pt=0.8: TP 1.
    expected = [2 / 5 - 2 / 5 * 0.3 / 0.7, 1 / 5 - 2 / 5 * 1.0, 1 / 5]
    assert net_benefit(y, prob, t) == pytest.approx(expected, abs=1e-12)


def test_treat_all_formula():
    t = np.array([0.1, 0.2, 0.5])
    expected = [0.2 - 0.8 * 0.1 / 0.9, 0.2 - 0.8 * 0.25, 0.2 - 0.8]
    assert treat_all_net_benefit(0.2, t) == pytest.approx(expected, abs=1e-12)
    # Treating all equals a model that gives everyone probability 1.
    y = np.array([1, 0, 0, 0, 0])
    assert net_benefit(y, np.ones(5), t) == pytest.approx(expected, abs=1e-12)
    assert np.all(treat_none_net_benefit(t) == 0.0)


def test_perfect_model_net_benefit_equals_prevalence():
    y = np.array([0, 0, 1, 1, 1, 0, 0, 0])
    prob = y * 0.999 + (1 - y) * 0.001
    assert net_benefit(y, prob, DEFAULT_THRESHOLDS) == pytest.approx(np.full(98, y.mean()), abs=1e-12)


def test_decision_curves_one_vs_rest_and_macro():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90)
    curves = decision_curves(y, probs, NAMES)
    json.dumps(curves, allow_nan=False)
    t = DEFAULT_THRESHOLDS
    assert curves["thresholds"] == pytest.approx(t)
    per_class = []
    for c, name in enumerate(NAMES):
        entry = curves["classes"][name]
        expected = net_benefit(y == c, probs[:, c], t)
        assert entry["model"] == pytest.approx(expected, abs=1e-12)
        assert entry["prevalence"] == pytest.approx(np.mean(y == c))
        assert entry["treat_all"] == pytest.approx(treat_all_net_benefit(np.mean(y == c), t), abs=1e-12)
        per_class.append(expected)
    assert curves["macro"]["model"] == pytest.approx(np.mean(per_class, axis=0), abs=1e-12)
    assert curves["macro"]["treat_none"] == [0.0] * len(t)


@pytest.mark.parametrize("thresholds", [np.array([0.5, 1.0]), np.array([-0.1]), np.array([])])
def test_invalid_thresholds_raise(thresholds):
    with pytest.raises(ValueError):
        net_benefit(np.array([0, 1]), np.array([0.2, 0.8]), thresholds)
