"""Empirical coverage of a package's conformal prediction sets on labelled cases, with 95 % intervals.

Coverage is a share of cases, so its interval is the exact (Clopper-Pearson) binomial one, overall and per
grade; the mean set size gets a percentile case bootstrap. The calibration guarantees at least the nominal
level per grade on exchangeable cases; what evaluation checks is whether the cases at hand are that.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from reactkd.conformal import ConformalCalibration, prediction_sets


def _exact_ci(hits: int, n: int) -> list[float | None]:
    if n == 0:
        return [None, None]
    interval = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    return [float(interval.low), float(interval.high)]


def coverage_report(labels, probs, calibration: ConformalCalibration, class_names, n_bootstrap: int = 1000,
                    seed: int = 0) -> dict:
    """Coverage (overall, per grade), mean set size, share of single-grade sets, each with its 95 % interval."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    sets = prediction_sets(calibration, probs)
    hit = sets[np.arange(len(labels)), labels]
    size = sets.sum(axis=1)
    weights = np.random.default_rng(seed).multinomial(len(size), np.full(len(size), 1 / len(size)), n_bootstrap)
    boot_size = weights @ size / len(size)
    per_class = {}
    for k, name in enumerate(class_names):
        mine = hit[labels == k]
        per_class[str(name)] = {"coverage": float(mine.mean()) if len(mine) else None,
                             "ci95": _exact_ci(int(mine.sum()), len(mine)), "n": int(len(mine))}
    return {"level": calibration.level, "n_calibration": calibration.n_per_class, "n": int(len(labels)),
            "coverage": float(hit.mean()), "coverage_ci95": _exact_ci(int(hit.sum()), len(hit)),
            "coverage_per_class": per_class, "mean_set_size": float(size.mean()),
            "mean_set_size_ci95": [float(np.percentile(boot_size, 2.5)), float(np.percentile(boot_size, 97.5))],
            "single_grade_share": float(np.mean(size == 1)),
            "set_sizes": {str(n): int(np.sum(size == n)) for n in range(1, probs.shape[1] + 1)}}
