"""Classification metrics for K-class probabilistic predictions, with percentile bootstrap CIs.

Everything returned is plain JSON (floats, ints, lists, dicts, None for undefined values), so the result
can go straight into ``metrics.json`` with ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from reactkd.scores import one_vs_rest_aucs

#: Upper bound on (resamples x samples) held in memory at once by the bootstrap.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


def validate_predictions(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> tuple[
        np.ndarray, np.ndarray]:
    """Check shapes and values; return ``(y_true int64 (N,), probs float64 (N, K))``."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if k < 2:
        raise ValueError(f"need at least 2 classes, got {k}")
    if y.ndim != 1 or p.ndim != 2 or p.shape != (y.shape[0], k):
        raise ValueError(f"expected y_true (N,) and probs (N, {k}); got {y.shape} and {p.shape}")
    if y.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds class indices outside 0..{k - 1}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs must be finite and lie in [0, 1]")
    return y, p


def to_json_float(value: float | np.floating | None) -> float | None:
    """float, with NaN/inf/None mapped to None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Multiclass Brier score: mean over samples of sum_k (p_k - y_k)^2 (range [0, 2], not halved)."""
    onehot = np.eye(probs.shape[1])[y_true]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def top_label_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Top-label bins: (edges, count, mean confidence, accuracy); empty bins give NaN."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the very edges used for display avoids float surprises such as 0.3 * 10 > 3.
    bin_index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bin_index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bin_index, weights=correct, minlength=n_bins) / count
    return edges, count, mean_conf, accuracy


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Top-label reliability table: equal-width confidence bins (lo, hi] over [0, 1] (0 goes to bin 0).

    Confidence is the largest probability of a sample, "correct" whether its argmax is the true class.
    Empty bins have confidence/accuracy None.
    """
    edges, count, mean_conf, accuracy = top_label_bins(y_true, probs, n_bins)
    return {"edges": edges.tolist(), "count": count.tolist(),
            "confidence": [to_json_float(v) for v in mean_conf],
            "accuracy": [to_json_float(v) for v in accuracy]}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over bins of (n_bin / N) * |accuracy_bin - mean confidence_bin|.

    Bins as in `reliability_bins` (10 equal-width bins by default, right-closed).
    """
    _, count, mean_conf, accuracy = top_label_bins(y_true, probs, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] / count.sum() * np.abs(accuracy[filled] - mean_conf[filled])))


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for many weightings of one sample set (Mann-Whitney; ties count one half, as scikit-learn).

    scores, positive: (N,); weights: (B, N) non-negative (bootstrap counts). Returns (B,), NaN where a
    row has no positive or no negative weight. The samples are sorted once; each row then costs O(N).
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order].astype(np.float64)
    pos_mask = positive[order]
    pos_w = np.add.reduceat(np.where(pos_mask, w, 0.0), group_starts, axis=1)  # (B, groups of ties)
    neg_w = np.add.reduceat(np.where(pos_mask, 0.0, w), group_starts, axis=1)
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    wins = np.sum(pos_w * (neg_below + 0.5 * neg_w), axis=1)
    total_pos, total_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = wins / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def _macro_f1_from_confusions(confusions: np.ndarray) -> np.ndarray:
    """Macro F1 of each (K, K) confusion matrix in a (B, K, K) stack; a class with 2TP+FP+FN = 0 scores 0
    (scikit-learn's ``zero_division=0``)."""
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    fp = confusions.sum(axis=1) - tp
    fn = confusions.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def _bootstrap(y: np.ndarray, probs: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Per-resample accuracy, macro F1, per-class AUC (B, K) and class presence (B, K).

    All index sets are drawn at once; each resample is then held as per-sample counts (how often each
    sample was drawn), so every metric is a weighted sum over the original samples, in memory-bounded
    chunks of resamples.
    """
    n, k = probs.shape
    indices = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    pred = probs.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    cell = np.eye(k * k)[y * k + pred]  # (N, K*K): each sample's (true, predicted) confusion cell
    accuracy = np.empty(n_bootstrap)
    confusions = np.empty((n_bootstrap, k, k))
    auc = np.empty((n_bootstrap, k))
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, n_bootstrap, chunk):
        rows = indices[start:start + chunk]
        b = rows.shape[0]
        counts = np.bincount((np.arange(b)[:, None] * n + rows).ravel(), minlength=b * n).reshape(b, n)
        accuracy[start:start + b] = counts @ correct / n
        confusions[start:start + b] = (counts @ cell).reshape(b, k, k)
        for c in range(k):  # K is tiny (3); each call is vectorised over resamples and samples
            auc[start:start + b, c] = weighted_auc(probs[:, c], y == c, counts)
    return {"accuracy": accuracy, "f1_macro": _macro_f1_from_confusions(confusions), "auc": auc,
            "present": confusions.sum(axis=2) > 0}


def _percentile_ci(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [None, None]
    low, high = np.percentile(values, [2.5, 97.5])
    return [to_json_float(low), to_json_float(high)]


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Discrimination, calibration and confusion metrics of K-class probabilities, plus bootstrap CIs.

    y_true: (N,) class indices; probs: (N, K) probabilities (rows should sum to 1 for Brier/ECE).
    AUCs are one-vs-rest; the macro AUC averages the per-class AUCs that are defined (a class absent from
    y_true has AUC None and a note). Bootstrap: ``n_bootstrap`` resamples, 95% percentile intervals; for
    AUCs a resample missing any class present in the data is skipped (count reported). Predicted class is
    the argmax. F1 uses all K labels with zero_division=0.
    """
    y, p = validate_predictions(y_true, probs, class_names)
    n, k = p.shape
    names = [str(c) for c in class_names]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    counts = np.bincount(y, minlength=k)
    present = counts > 0
    notes: list[str] = []
    for c in np.flatnonzero(~present):
        notes.append(f"class '{names[c]}' is absent from y_true: its AUC and sensitivity are undefined")
    if present.sum() < 2:
        notes.append("fewer than two classes present: no AUC can be computed")

    auc_per_class = one_vs_rest_aucs(y, p)
    defined = [a for a in auc_per_class if a is not None]
    auc_macro = float(np.mean(defined)) if present.sum() >= 2 else None
    onehot = np.eye(k, dtype=np.int64)[y]
    auc_micro = roc_auc_score(onehot.ravel(), p.ravel()) if present.sum() >= 2 else None

    cm = confusion_matrix(y, pred, labels=labels)
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = n - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = tp / (tp + fn)
        specificity = tn / (tn + fp)
    f1_per_class = f1_score(y, pred, labels=labels, average=None, zero_division=0)

    result = {
        "n_samples": int(n),
        "class_names": names,
        "class_counts": counts.tolist(),
        "auc_macro": to_json_float(auc_macro),
        "auc_micro": to_json_float(auc_micro),
        "auc_per_class": {names[c]: to_json_float(auc_per_class[c]) for c in labels},
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1_per_class": {names[c]: float(f1_per_class[c]) for c in labels},
        "sensitivity": {names[c]: to_json_float(sensitivity[c]) for c in labels},
        "specificity": {names[c]: to_json_float(specificity[c]) for c in labels},
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p, n_bins=10),
        "ece_definition": "top-label, 10 equal-width confidence bins (lo, hi]",
        "reliability": reliability_bins(y, p, n_bins=10),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
        "ci95": {"auc_macro": [None, None], "accuracy": [None, None], "f1_macro": [None, None],
                 "auc_per_class": {name: [None, None] for name in names}},
        "bootstrap": {"n_resamples": int(n_bootstrap), "seed": int(seed), "method": "percentile",
                      "n_skipped_auc": 0},
        "notes": notes,
    }
    if n_bootstrap > 0:
        boot = _bootstrap(y, p, n_bootstrap, seed)
        # A resample counts for AUC only if it holds every class the full data holds, so the macro
        # average always runs over the same classes as the point estimate.
        valid = np.all(boot["present"][:, present], axis=1) if present.sum() >= 2 else np.zeros(
            n_bootstrap, dtype=bool)
        macro = np.nanmean(boot["auc"][valid][:, present], axis=1) if valid.any() else np.empty(0)
        result["ci95"]["accuracy"] = _percentile_ci(boot["accuracy"])
        result["ci95"]["f1_macro"] = _percentile_ci(boot["f1_macro"])
        result["ci95"]["auc_macro"] = _percentile_ci(macro)
        result["ci95"]["auc_per_class"] = {
            names[c]: _percentile_ci(boot["auc"][valid, c]) if auc_per_class[c] is not None else [None, None]
            for c in labels}
        skipped = int(n_bootstrap - valid.sum())
        result["bootstrap"]["n_skipped_auc"] = skipped
        if skipped:
            notes.append(f"{skipped} of {n_bootstrap} bootstrap resamples lacked a class and were skipped "
                         "for the AUC intervals")
    return result


def paired_macro_auc_difference(y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                                n_bootstrap: int = 2000, seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """Macro AUC of B minus A on the same cases, with a paired percentile bootstrap (both models scored on
    each resample) and the share of resamples where B is not better (a one-sided bootstrap p-value).

    probs: (N, K), or (S, N, K) for S training runs (seeds) of each model on the same N cases. ``groups``
    (S, N) or (N,) ints splits the cases of each run into the separately trained models that scored them
    (the folds of a cross-validation; default: one). The statistic is the mean over (run, group) of the macro
    AUC inside the group, so scores of different fold models are never ranked against each other, and it
    equals the mean of the per-fold AUCs. Each bootstrap resample draws cases once, for every run and group
    and both models. The interval covers case sampling given these trained models: the spread between
    training runs is averaged out, not included. Resamples that lack a class in a group are skipped, as in
    ``classification_metrics``.
    """
    y = np.asarray(y_true)
    runs_a, runs_b = np.asarray(probs_a), np.asarray(probs_b)
    runs_a, runs_b = (runs_a[None] if runs_a.ndim == 2 else runs_a), (runs_b[None] if runs_b.ndim == 2 else runs_b)
    s, n, k = runs_a.shape
    if runs_b.shape != (s, n, k) or len(y) != n:
        raise ValueError("both models need probabilities for the same cases (and the same number of runs)")
    groups = np.zeros((s, n), dtype=int) if groups is None else np.broadcast_to(np.asarray(groups), (s, n))
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap)
    full = np.ones((1, n))

    def macro(runs: np.ndarray, weights: np.ndarray) -> np.ndarray:  # (B,) mean over (run, group) and classes
        parts = [weighted_auc(run[part, c], y[part] == c, weights[:, part])
                 for run, labels in zip(runs, groups) for g in np.unique(labels)
                 for part in [labels == g] for c in range(k)]
        return np.mean(parts, axis=0)

    difference = macro(runs_b, counts) - macro(runs_a, counts)
    valid = np.isfinite(difference)
    point = {"a": float(macro(runs_a, full)[0]), "b": float(macro(runs_b, full)[0])}
    return {"auc_macro_a": point["a"], "auc_macro_b": point["b"], "difference": point["b"] - point["a"],
            "ci95": _percentile_ci(difference[valid]), "p_b_not_better": float(np.mean(difference[valid] <= 0)),
            "n_resamples": int(valid.sum()), "n_cases": int(n), "n_runs": int(s),
            "n_groups": int(sum(len(np.unique(labels)) for labels in groups))}


def attention_share(attention: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float],
                    ring_mm: float = 5.0) -> float | None:
    """Share of a non-negative attention map's mass inside the tumour (mask label 2) and the ring of
    liver-or-anything within ``ring_mm`` of it; None when the map is all zero. Arrays are (z, y, x) on one
    grid with the given spacing."""
    from scipy import ndimage

    attention = np.asarray(attention, dtype=np.float64)
    tumour = np.asarray(mask) == 2
    if attention.shape != tumour.shape:
        raise ValueError(f"attention {attention.shape} and mask {tumour.shape} must share a grid")
    total = float(attention.sum())
    if not tumour.any() or total <= 0:
        return None
    # Only a box around the tumours can lie within the ring: a full-size CT's distance map takes seconds.
    grow = np.ceil(ring_mm / np.asarray(spacing_zyx, dtype=float)).astype(int) + 1
    found = np.argwhere(tumour)
    box = tuple(slice(max(int(lo) - g, 0), int(hi) + g + 1) for lo, hi, g in zip(found.min(0), found.max(0), grow))
    distance = ndimage.distance_transform_edt(~tumour[box], sampling=spacing_zyx)
    return float(attention[box][distance <= ring_mm].sum() / total)
