"""Temperature scaling, and the rule for applying it: only where it lowers NLL on cases it was not fitted on.

softmax(logits / T) with T fitted by NLL. A package stores T when a temperature fitted on some folds of its
inner-validation cases lowers NLL on the other folds (cross-fitted); the fit on all of them is then stored,
otherwise T = 1 and why. Numbers only (NumPy, SciPy).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

FOLDS = 5
LOG_T_BOUNDS = (-3.0, 3.0)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a temperature T gives (log p are the logits up to a constant)."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature minimising NLL on these cases (log T searched in LOG_T_BOUNDS)."""
    found = minimize_scalar(lambda log_t: nll(labels, with_temperature(probs, float(np.exp(log_t)))),
                            bounds=LOG_T_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) fold of each case: each grade's cases dealt round-robin over the folds in a shuffled order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for grade in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == grade))
        fold[members] = np.arange(len(members)) % folds
    return fold


def usable_folds(labels: np.ndarray, n_classes: int, folds: int = FOLDS) -> int:
    """How many grade-stratified folds these cases allow (each fold needs a case of every grade); below 2:
    no cross-fitting."""
    return min(folds, int(np.bincount(labels, minlength=n_classes).min()) if len(labels) else 0)


def cross_fitted(labels: np.ndarray, probs: np.ndarray, folds: int = FOLDS, seed: int = 0) -> tuple[np.ndarray,
                                                                                                     list[float]]:
    """(each case's probabilities under the temperature fitted on the other folds, the fold temperatures)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    fold = stratified_folds(labels, folds, seed)
    scaled, temperatures = np.empty_like(probs), []
    for k in range(folds):
        held = fold == k
        temperatures.append(fit_temperature(labels[~held], probs[~held]))
        scaled[held] = with_temperature(probs[held], temperatures[-1])
    return scaled, temperatures


def choose_temperature(labels, probs, folds: int = FOLDS) -> dict:
    """The package's ``temperature`` block: the value to apply (1 unless cross-fitting shows a gain) and why."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    folds = usable_folds(labels, probs.shape[1], folds)
    if folds < 2:
        return {"value": 1.0, "applied": False, "why": "too few validation cases of some grade to cross-fit"}
    scaled, per_fold = cross_fitted(labels, probs, folds)
    before, after = nll(labels, probs), nll(labels, scaled)
    record = {"folds": folds, "per_fold": [round(t, 4) for t in per_fold], "nll_before": round(before, 4),
              "nll_after_cross_fitted": round(after, 4), "n": int(len(labels))}
    if after < before:
        return {"value": round(fit_temperature(labels, probs), 4), "applied": True, **record,
                "why": "a temperature fitted on other folds lowered NLL on the held-out fold"}
    return {"value": 1.0, "applied": False, **record,
            "why": "a temperature fitted on other folds did not lower NLL on the held-out fold"}


def package_temperature(metadata: dict) -> float:
    """The temperature a package's logits are divided by (1 when it stores none or chose not to apply one)."""
    block = metadata.get("temperature")
    return float(block["value"]) if isinstance(block, dict) and block.get("applied") else 1.0


def temperature_problems(block) -> list[str]:
    if block is None:
        return []
    value = block.get("value") if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or \
            not np.exp(LOG_T_BOUNDS[0]) - 1e-6 <= value <= np.exp(LOG_T_BOUNDS[1]) + 1e-6 or \
            not isinstance(block.get("applied"), bool):
        return ["temperature must be a mapping with a finite value in [0.05, 20] and applied true or false"]
    return []
