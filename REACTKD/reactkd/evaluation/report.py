"""Evaluation report: ``metrics.json`` plus PNG figures in one output folder."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from reactkd.atomic import write_text_atomic
from reactkd.evaluation.calibration import calibration_report
from reactkd.evaluation.coverage import coverage_report
from reactkd.evaluation.dca import DEFAULT_THRESHOLDS, decision_curves
from reactkd.evaluation.metrics import classification_metrics
from reactkd.evaluation.plots import (
    plot_auc_by_modality,
    plot_auc_vs_dose,
    plot_calibration,
    plot_confusion_matrix,
    plot_decision_curves,
    plot_roc_curves,
)

Predictions = tuple[np.ndarray, np.ndarray]  # (y_true (N,), probs (N, K))


def _file_stem(name: str) -> str:
    """A file-name-safe form of a section name ("fold 1/val" -> "fold_1_val")."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "section"


def _auc_with_ci(metrics: Mapping) -> tuple[float | None, float | None, float | None]:
    low, high = metrics["ci95"]["auc_macro"]
    return metrics["auc_macro"], low, high


def write_evaluation_report(out_dir: str | os.PathLike, sections: Mapping[str, Predictions],
                            class_names: Sequence[str],
                            doses: Mapping[float, Predictions] | None = None,
                            modalities: Mapping[str, Predictions] | None = None,
                            n_bootstrap: int = 1000, seed: int = 0,
                            thresholds: np.ndarray = DEFAULT_THRESHOLDS, conformal=None,
                            no_set_reason: str = "no conformal calibration given") -> dict:
    """Compute metrics for every prediction set and write ``metrics.json`` and the figures to `out_dir`.

    sections: e.g. {"overall": (y, p), "fold_1": ...}; each gets metrics, decision curves and ROC, DCA,
    calibration and confusion figures. doses: {dose fraction: (y, p)} -> metrics and an AUC-vs-dose
    figure. modalities: {"CT": ..., "CT+FDG": ...} -> metrics and an AUC-per-subset bar chart.
    conformal: the package's ``ConformalCalibration``: every section, dose and subset then reports the
    coverage of its prediction sets (``evaluation.coverage``); without it they say `no_set_reason`. Sections
    also report calibration with intervals and a cross-fitted temperature (``evaluation.calibration``).
    Returns the dict written to ``metrics.json``; its "figures" maps a figure key to its file name.
    """

    def sets(y_true, probs) -> dict:
        if conformal is None:
            return {"unavailable": no_set_reason}
        return coverage_report(y_true, probs, conformal, names, n_bootstrap=n_bootstrap, seed=seed)

    if not sections:
        raise ValueError("at least one section of predictions is needed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [str(c) for c in class_names]
    report: dict = {"class_names": names, "sections": {}, "figures": {}}
    figures: dict[str, str] = report["figures"]
    used_stems: set[str] = set()

    for name, (y_true, probs) in sections.items():
        metrics = classification_metrics(y_true, probs, names, n_bootstrap=n_bootstrap, seed=seed)
        metrics["decision_curves"] = decision_curves(y_true, probs, names, thresholds)
        metrics["calibration"] = calibration_report(y_true, probs, seed=seed)
        metrics["prediction_sets"] = sets(y_true, probs)
        report["sections"][str(name)] = metrics
        stem = _file_stem(str(name))
        while stem in used_stems:  # two names that sanitise alike must not overwrite each other's figures
            stem += "_"
        used_stems.add(stem)
        written = {
            f"roc_{stem}": plot_roc_curves(y_true, probs, names, out / f"roc_{stem}.png",
                                           title=f"ROC (one-vs-rest): {name}"),
            f"dca_{stem}": plot_decision_curves(metrics["decision_curves"], out / f"dca_{stem}.png"),
            f"calibration_{stem}": plot_calibration(y_true, probs, names, out / f"calibration_{stem}.png"),
            f"confusion_{stem}": plot_confusion_matrix(metrics["confusion_matrix"], names,
                                                       out / f"confusion_{stem}.png"),
        }
        figures.update({key: path.name for key, path in written.items()})

    if doses:
        dose_metrics = {float(d): classification_metrics(y, p, names, n_bootstrap=n_bootstrap, seed=seed)
                        for d, (y, p) in doses.items()}
        for dose, (y, p) in doses.items():
            dose_metrics[float(dose)]["prediction_sets"] = sets(y, p)
        report["doses"] = {f"{d:g}": m for d, m in sorted(dose_metrics.items(), reverse=True)}
        path = plot_auc_vs_dose({d: _auc_with_ci(m) for d, m in dose_metrics.items()},
                                out / "auc_vs_dose.png")
        figures["auc_vs_dose"] = path.name

    if modalities:
        subset_metrics = {str(s): classification_metrics(y, p, names, n_bootstrap=n_bootstrap, seed=seed)
                          for s, (y, p) in modalities.items()}
        for subset, (y, p) in modalities.items():
            subset_metrics[str(subset)]["prediction_sets"] = sets(y, p)
        report["modalities"] = subset_metrics
        path = plot_auc_by_modality({s: _auc_with_ci(m) for s, m in subset_metrics.items()},
                                    out / "auc_by_modality.png")
        figures["auc_by_modality"] = path.name

    # allow_nan=False: a NaN that slipped through is a bug here, not something to hand to JSON readers.
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2, allow_nan=False))
    return report
