"""Statistics of a training study: per-run metrics, intervals over runs, and a two-level bootstrap.

A training choice is judged by how it changes models trained again (another seed), not only by case
sampling given one set of trained models. Every arm is a stack of runs (S, N, K) of probabilities on the same
N test cases; run s of two arms shares its seed (initialisation, batch order), so arms compare run by run.

- ``run_metrics``: macro AUC, accuracy, NLL, Brier, classwise ECE, ordinal C-index and moderate-vs-rest AUC
  of one run.
- ``run_level``: mean over runs with a t interval (the runs are the sample).
- ``hierarchical_bootstrap``: resample runs, then cases, and recompute; for two arms the same runs (by seed)
  and cases are drawn for both, so the interval of the difference covers training and case sampling.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from reactkd.evaluation.metrics import brier_score, weighted_auc

N_CLASSES = 3
ECE_BINS = 10


def classwise_ece(y: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Mean over classes of the binned |observed rate - mean probability| of that class, weighted by bin size
    (Kull et al. 2019's classwise ECE)."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    errors = []
    for k in range(probs.shape[1]):
        p, hit = probs[:, k], (y == k).astype(np.float64)
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        counts = np.bincount(bins, minlength=n_bins)
        gap = np.abs(np.bincount(bins, hit, n_bins) - np.bincount(bins, p, n_bins))
        errors.append(float(gap.sum() / max(counts.sum(), 1)))
    return float(np.mean(errors))


def ordinal_c_index(y: np.ndarray, probs: np.ndarray) -> float:
    """Harrell's C of the expected grade sum_k k p_k against the grade: the share of case pairs of different
    grades that the score orders like the grades (ties count one half)."""
    y = np.asarray(y)
    score = np.asarray(probs, dtype=np.float64) @ np.arange(probs.shape[1])
    higher = y[:, None] > y[None, :]
    diff = score[:, None] - score[None, :]
    concordant = ((diff > 0) & higher).sum() + 0.5 * ((diff == 0) & higher).sum()
    return float(concordant / max(higher.sum(), 1))


def run_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every figure the study reports for one run's test probabilities (N, K) (renormalised in float64: float32
    softmax outputs, or stored ones rounded to 6 digits, miss 1 by a few ulps)."""
    y, probs = np.asarray(y), np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return {"auc_macro": float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=range(N_CLASSES))),
            "accuracy": float(np.mean(probs.argmax(1) == y)),
            "nll": float(log_loss(y, np.clip(probs, 1e-7, 1), labels=range(N_CLASSES))),
            "brier": float(brier_score(y, probs)),
            "ece_classwise": classwise_ece(y, probs),
            "c_index": ordinal_c_index(y, probs),
            "auc_moderate_vs_rest": float(roc_auc_score(y == 1, probs[:, 1]))}


def run_level(values) -> dict:
    """Mean over runs, its standard deviation and a two-sided 95 % t interval (None below two runs)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "ci95": [None, None], "n_runs": 0}
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "sd": None, "ci95": [None, None], "n_runs": 1}
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n_runs": n}


def _macro_auc_weighted(y: np.ndarray, run: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) macro AUC of one run's probabilities (N, K) under B case weightings (B, N)."""
    return np.mean([weighted_auc(run[:, k], y == k, weights) for k in range(run.shape[1])], axis=0)


def hierarchical_bootstrap(y: np.ndarray, runs_a: np.ndarray, runs_b: np.ndarray | None = None,
                           n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """Two-level percentile bootstrap of the mean macro AUC over runs (``runs_a`` (S, N, K)), or of the paired
    difference B - A when ``runs_b`` is given (run s of both arms shares seed s): each resample draws S runs
    with replacement, then N cases with replacement, the same for both arms."""
    y = np.asarray(y)
    runs_a = np.asarray(runs_a, dtype=np.float64)
    s, n, _ = runs_a.shape
    if runs_b is not None and np.shape(runs_b) != runs_a.shape:
        raise ValueError("paired arms need the same runs (seeds) on the same cases")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64)   # (B, N)
    chosen = rng.integers(0, s, size=(n_bootstrap, s))                                          # (B, S)

    def resampled(runs: np.ndarray) -> tuple[np.ndarray, float]:
        per_run = np.stack([_macro_auc_weighted(y, run, weights) for run in runs])             # (S, B)
        point = float(np.mean([roc_auc_score(y, run, multi_class="ovr", labels=range(N_CLASSES)) for run in runs]))
        return per_run[chosen, np.arange(n_bootstrap)[:, None]].mean(axis=1), point           # (B,)

    values, point = resampled(runs_a)
    if runs_b is not None:
        values_b, point_b = resampled(np.asarray(runs_b, dtype=np.float64))
        values, point = values_b - values, point_b - point
    valid = values[np.isfinite(values)]
    result = {"estimate": point, "ci95": [float(np.percentile(valid, 2.5)), float(np.percentile(valid, 97.5))],
              "n_resamples": int(len(valid)), "n_runs": int(s), "n_cases": int(n)}
    if runs_b is not None:
        result["p_not_better"] = float(np.mean(valid <= 0))
    return result
