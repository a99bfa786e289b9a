"""Report figures as PNG files (matplotlib, Agg canvas).

Figures are built on `matplotlib.figure.Figure`, never through pyplot, so no global backend is chosen or
changed (safe inside Slicer, threads and headless servers). Each file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, roc_curve

from reactkd.atomic import atomic_path
from reactkd.evaluation.metrics import top_label_bins, validate_predictions

#: (auc, ci_low, ci_high); any of them may be None.
AucWithCI = tuple[float | None, float | None, float | None]

_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)
    return path


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def plot_roc_curves(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                    path: str | os.PathLike, title: str = "ROC (one-vs-rest)") -> Path:
    """ROC curve of each class (one-vs-rest) and their macro average (mean TPR on a shared FPR grid)."""
    y, p = validate_predictions(y_true, probs, class_names)
    figure = _new_figure(5.5, 5.0)
    ax = figure.add_subplot()
    grid = np.linspace(0.0, 1.0, 201)
    tprs, areas = [], []
    for c, name in enumerate(class_names):
        positive = y == c
        if positive.all() or not positive.any():
            continue  # ROC undefined without both positives and negatives
        fpr, tpr, _ = roc_curve(positive, p[:, c])
        area = auc(fpr, tpr)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {area:.3f})")
        tprs.append(np.interp(grid, fpr, tpr))
        areas.append(area)
    if tprs:
        # Label with the mean of per-class AUCs, the macro AUC reported in metrics.json.
        ax.plot(grid, np.mean(tprs, axis=0), "k--", lw=2, label=f"macro (AUC {np.mean(areas):.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate",
           title=title, aspect="equal")
    ax.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_decision_curves(curves: Mapping, path: str | os.PathLike) -> Path:
    """Net benefit vs threshold probability, one panel per class and one for the macro average.

    `curves` is the output of `reactkd.evaluation.dca.decision_curves`.
    """
    t = np.asarray(curves["thresholds"], dtype=np.float64)
    panels = [(name, entry) for name, entry in curves["classes"].items()] + [("macro", curves["macro"])]
    figure = _new_figure(4.0 * len(panels), 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, entry) in zip(axes, panels):
        model = np.asarray([_nan(v) for v in entry["model"]])
        treat_all = np.asarray([_nan(v) for v in entry["treat_all"]])
        ax.plot(t, model, lw=1.8, label="model")
        ax.plot(t, treat_all, lw=1.2, color="0.4", label="treat all")
        ax.plot(t, np.zeros_like(t), lw=1.2, color="k", ls="--", label="treat none")
        top = np.nanmax(np.concatenate([model, treat_all, [0.0]]))
        ax.set(xlim=(t.min(), t.max()), ylim=(-0.05 - 0.1 * max(top, 0.05), max(top, 0.05) * 1.15),
               xlabel="Threshold probability", ylabel="Net benefit", title=name)
        ax.legend(fontsize="small")
    return _save(figure, path)


def plot_calibration(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                     path: str | os.PathLike, n_bins: int = 10) -> Path:
    """Reliability diagrams: top-label (accuracy per confidence bin, as the ECE) and per class (OvR)."""
    y, p = validate_predictions(y_true, probs, class_names)
    figure = _new_figure(10.0, 4.6)
    top_ax, class_ax = figure.subplots(1, 2)
    edges, count, mean_conf, accuracy = top_label_bins(y, p, n_bins)
    width = np.diff(edges)
    filled = count > 0
    top_ax.bar(edges[:-1], np.nan_to_num(accuracy), width=width, align="edge", edgecolor="k",
               alpha=0.7, label="accuracy")
    # Shaded gap from accuracy to mean confidence: its count-weighted size is the ECE.
    top_ax.bar(edges[:-1][filled], (mean_conf - accuracy)[filled], bottom=accuracy[filled],
               width=width[filled], align="edge", color="C3", alpha=0.35, hatch="//", label="gap to confidence")
    ece = float(np.sum(count[filled] / count.sum() * np.abs(accuracy - mean_conf)[filled]))
    top_ax.set_title(f"Top-label reliability (ECE {ece:.3f})")
    for c, name in enumerate(class_names):
        positive = y == c
        if positive.all() or not positive.any():
            continue
        frac_pos, mean_pred = calibration_curve(positive, p[:, c], n_bins=n_bins, strategy="uniform")
        class_ax.plot(mean_pred, frac_pos, "o-", lw=1.5, label=str(name))
    class_ax.set_title("Per class (one-vs-rest)")
    for ax, xlabel, ylabel in ((top_ax, "Confidence", "Accuracy"),
                               (class_ax, "Mean predicted probability", "Observed frequency")):
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="perfect")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, aspect="equal")
        ax.legend(fontsize="small", loc="upper left")
    return _save(figure, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str],
                          path: str | os.PathLike) -> Path:
    """Confusion matrix (rows true, columns predicted): colour = row-normalised rate, text = count (rate)."""
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must be ({k}, {k}), got {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    figure = _new_figure(1.4 * k + 2.2, 1.3 * k + 1.4)
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, label="row fraction")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{counts[i, j]}\n({rates[i, j]:.0%})", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize="small")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=class_names, yticklabels=class_names,
           xlabel="Predicted", ylabel="True", title="Confusion matrix")
    return _save(figure, path)


def _errorbar_arrays(values: Sequence[AucWithCI]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and asymmetric error bars (2, n); a missing interval draws no bar."""
    centre = np.asarray([_nan(v[0]) for v in values])
    low = np.asarray([_nan(v[1]) for v in values])
    high = np.asarray([_nan(v[2]) for v in values])
    err = np.nan_to_num(np.stack([centre - low, high - centre]), nan=0.0).clip(min=0.0)
    return centre, err


def plot_auc_vs_dose(dose_auc: Mapping[float, AucWithCI], path: str | os.PathLike) -> Path:
    """Macro AUC (with 95% CI) against simulated CT dose fraction (1 = full dose), log x-axis."""
    return plot_auc_vs_dose_models({"": dose_auc}, path)


def plot_auc_vs_dose_models(curves: Mapping[str, Mapping[float, AucWithCI]], path: str | os.PathLike) -> Path:
    """Several models' macro AUC (with 95% CI) against the dose on one figure (one curve per name; a single
    unnamed curve gets no legend). Curves are nudged sideways a little so their error bars do not overlap."""
    if not curves or not any(curves.values()):
        raise ValueError("no dose levels to plot")
    figure = _new_figure(5.5 if len(curves) == 1 else 6.5, 4.0)
    ax = figure.add_subplot()
    all_doses = sorted({d for dose_auc in curves.values() for d in dose_auc})
    for index, (name, dose_auc) in enumerate(curves.items()):
        doses = sorted(dose_auc)
        auc_values, err = _errorbar_arrays([dose_auc[d] for d in doses])
        nudge = 1.0 + 0.04 * (index - (len(curves) - 1) / 2)
        ax.errorbar(np.asarray(doses) * nudge, auc_values, yerr=err, fmt="o-", capsize=4, lw=1.5,
                    label=name or None)
    if min(all_doses) > 0:
        ax.set_xscale("log")
    ax.set_xticks(all_doses, labels=[f"{d:g}" for d in all_doses])
    ax.minorticks_off()
    ax.axhline(0.5, color="0.6", ls=":", lw=1)
    if any(curves):
        ax.legend(loc="lower right", fontsize="small")
    ax.set(ylim=(0.0, 1.02), xlabel="CT dose fraction", ylabel="Macro AUC (95% CI)", title="AUC vs dose")
    return _save(figure, path)


def plot_auc_by_modality(subset_auc: Mapping[str, AucWithCI], path: str | os.PathLike) -> Path:
    """Bar chart of macro AUC (with 95% CI) per available-modality subset, in the given order."""
    if not subset_auc:
        raise ValueError("no modality subsets to plot")
    names = list(subset_auc)
    auc_values, err = _errorbar_arrays([subset_auc[n] for n in names])
    figure = _new_figure(1.3 * len(names) + 2.5, 4.0)
    ax = figure.add_subplot()
    positions = np.arange(len(names))
    ax.bar(positions, np.nan_to_num(auc_values), yerr=err, capsize=4, color="C0", edgecolor="k")
    for x, value in zip(positions, auc_values):
        ax.text(x, 0.02, "n/a" if np.isnan(value) else f"{value:.3f}", ha="center", va="bottom",
                color="white" if not np.isnan(value) else "black", fontsize="small")
    ax.axhline(0.5, color="0.6", ls=":", lw=1)
    ax.set_xticks(positions, labels=names)
    ax.set(ylim=(0.0, 1.02), ylabel="Macro AUC (95% CI)", title="AUC per modality subset")
    return _save(figure, path)
