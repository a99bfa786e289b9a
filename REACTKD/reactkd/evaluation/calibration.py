"""How well a model's probabilities are calibrated, and whether a temperature would help, measured honestly.

- Classwise ECE (``study.classwise_ece``), NLL and Brier with percentile case-bootstrap intervals: at about 80
  test cases ECE scores about 0.09 even for a calibrated model, so the interval is part of the figure.
- Temperature scaling cross-fitted over the evaluated cases: a temperature fitted on the other folds (NLL,
  log T in [-3, 3]) is applied to each fold, so "after" is on cases its temperature never saw. The verdict
  says whether that lowers NLL; nothing is applied to the model here.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.model_selection import StratifiedKFold

from reactkd.evaluation.metrics import brier_score
from reactkd.evaluation.study import classwise_ece

TEMPERATURE_FOLDS = 5


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a temperature T would give (log p are the logits up to a constant)."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimising NLL on these cases."""
    found = minimize_scalar(lambda log_t: nll(labels, with_temperature(probs, float(np.exp(log_t)))),
                            bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(found.x))


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
    folds = min(TEMPERATURE_FOLDS, int(np.bincount(labels).min()))
    if folds < 2:
        report["temperature"] = {"unavailable": "fewer than 2 cases of some grade: no cross-fitted temperature"}
        return report
    scaled, temperatures = np.empty_like(probs), []
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probs, labels):
        temperatures.append(fit_temperature(labels[fit], probs[fit]))
        scaled[held] = with_temperature(probs[held], temperatures[-1])
    after = _with_ci(labels, scaled, n_bootstrap, seed)
    report["temperature"] = {"folds": folds, "per_fold": temperatures, "after": after,
                             "improves_nll": after["nll"]["value"] < report["before"]["nll"]["value"]}
    return report
