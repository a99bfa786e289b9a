"""Decision curve analysis (Vickers & Elkin 2006): net benefit of acting on a model's probability.

A patient is "treated" when its probability is >= the threshold probability pt (as the `dcurves`
package does). Net benefit = TP/N - FP/N * pt / (1 - pt); treat-all treats everyone, treat-none no one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reactkd.evaluation.metrics import to_json_float, validate_predictions

DEFAULT_THRESHOLDS = np.arange(0.01, 0.99, 0.01)


def _check_thresholds(thresholds: np.ndarray) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.all(np.isfinite(t)) or t.min() < 0.0 or t.max() >= 1.0:
        raise ValueError("thresholds must be non-empty and lie in [0, 1)")
    return t


def _threshold_odds(thresholds: np.ndarray) -> np.ndarray:
    """pt / (1 - pt): the exchange rate of false positives for true positives at threshold pt."""
    return thresholds / (1.0 - thresholds)


def net_benefit(y_true_binary: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of the model at each threshold: (T,) for y_true_binary (N,) in {0, 1}, prob (N,)."""
    y = np.asarray(y_true_binary).astype(bool).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"y_true_binary and prob must be non-empty and the same length; got {y.shape}, "
                         f"{p.shape}")
    t = _check_thresholds(thresholds)
    n = y.size
    # Counting "prob >= t" by binary search over sorted scores: O((N + T) log N), no (T, N) matrix.
    pos_sorted = np.sort(p[y])
    neg_sorted = np.sort(p[~y])
    tp = pos_sorted.size - np.searchsorted(pos_sorted, t, side="left")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, t, side="left")
    return tp / n - fp / n * _threshold_odds(t)


def treat_all_net_benefit(prevalence: float, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating everyone: prevalence - (1 - prevalence) * pt / (1 - pt)."""
    t = _check_thresholds(thresholds)
    return prevalence - (1.0 - prevalence) * _threshold_odds(t)


def treat_none_net_benefit(thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating no one: zero at every threshold."""
    return np.zeros_like(_check_thresholds(thresholds))


def _json_list(values: np.ndarray) -> list[float | None]:
    return [to_json_float(v) for v in values]


def decision_curves(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                    thresholds: np.ndarray = DEFAULT_THRESHOLDS) -> dict:
    """One-vs-rest decision curves for each class and their macro average (mean net benefit over classes).

    Returns ``{"thresholds": [...], "classes": {name: {"prevalence", "model", "treat_all",
    "treat_none"}}, "macro": {"model", "treat_all", "treat_none"}}`` as JSON-ready lists.
    """
    y, p = validate_predictions(y_true, probs, class_names)
    t = _check_thresholds(thresholds)
    names = [str(c) for c in class_names]
    model = np.stack([net_benefit(y == c, p[:, c], t) for c in range(len(names))])
    prevalence = np.bincount(y, minlength=len(names)) / y.size
    treat_all = prevalence[:, None] - (1.0 - prevalence[:, None]) * _threshold_odds(t)[None, :]
    none = treat_none_net_benefit(t)
    classes = {name: {"prevalence": float(prevalence[c]), "model": _json_list(model[c]),
                      "treat_all": _json_list(treat_all[c]), "treat_none": _json_list(none)}
               for c, name in enumerate(names)}
    return {"thresholds": _json_list(t), "classes": classes,
            "macro": {"model": _json_list(model.mean(axis=0)), "treat_all": _json_list(treat_all.mean(axis=0)),
                      "treat_none": _json_list(none)}}
