"""How well a model's probabilities are calibrated, and whether a temperature would help, measured honestly.

- Classwise ECE (``study.classwise_ece``), NLL and Brier with percentile case-bootstrap intervals: at about 80
  test cases ECE scores about 0.09 even for a calibrated model, so the interval is part of the figure.
- Temperature scaling cross-fitted over the evaluated cases (``reactkd.temperature``): a temperature fitted on
  the other folds is applied to each fold, so "after" is on cases its temperature never saw. The verdict
  says whether that lowers NLL; nothing is applied to the model here.
"""

from __future__ import annotations

import numpy as np

from reactkd.evaluation.metrics import brier_score
from reactkd.evaluation.study import classwise_ece
from reactkd.temperature import cross_fitted, nll, usable_folds


def _scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {"nll": nll(labels, probs), "brier": brier_score(labels, probs), "ece_classwise": classwise_ece(labels, probs)}


def _with_ci(labels: np.ndarray, probs: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    point = _scores(labels, probs)
    rng = np.random.default_rng(seed)
    draws = [_scores(labels[i], probs[i]) for i in rng.integers(0, len(labels), (n_bootstrap, len(labels)))]
    return {name: {"value": value, "ci95": [float(np.percentile([d[name] for d in draws], q)) for q in (2.5, 97.5)]}
            for name, value in point.items()}


def calibration_report(labels, probs, n_bootstrap: int = 500, seed: int = 0) -> dict:
    """Calibration figures with intervals, before and after a cross-fitted temperature."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    report = {"n": int(len(labels)), "ece_definition": "classwise, 10 equal-width bins, mean over grades",
              "before": _with_ci(labels, probs, n_bootstrap, seed)}
    folds = usable_folds(labels, probs.shape[1])
    if folds < 2:
        report["temperature"] = {"unavailable": "fewer than 2 cases of some grade: no cross-fitted temperature"}
        return report
    scaled, temperatures = cross_fitted(labels, probs, folds, seed)
    after = _with_ci(labels, scaled, n_bootstrap, seed)
    report["temperature"] = {"folds": folds, "per_fold": temperatures, "after": after,
                             "improves_nll": after["nll"]["value"] < report["before"]["nll"]["value"]}
    return report
