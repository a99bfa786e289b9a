"""Figures and the evaluation report: valid PNGs written atomically, strict JSON, degenerate sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from reactkd.evaluation.dca import decision_curves
from reactkd.evaluation.plots import (
    plot_auc_by_modality,
    plot_auc_vs_dose,
    plot_calibration,
    plot_confusion_matrix,
    plot_decision_curves,
    plot_roc_curves,
)
from reactkd.evaluation.report import write_evaluation_report

NAMES = ("well", "moderate", "poor")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _predictions(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits)
    return y, probs / probs.sum(axis=1, keepdims=True)


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000  # an empty canvas compresses to far less
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200
    assert np.ptp(image[..., :3]) > 0.5  # something was drawn


def test_each_plot_writes_a_valid_png_and_no_temporary_files(tmp_path):
    y, probs = _predictions()
    paths = [
        plot_roc_curves(y, probs, NAMES, tmp_path / "roc.png"),
        plot_decision_curves(decision_curves(y, probs, NAMES), tmp_path / "dca.png"),
        plot_calibration(y, probs, NAMES, tmp_path / "calibration.png"),
        plot_confusion_matrix([[10, 2, 1], [3, 9, 0], [0, 4, 8]], NAMES, tmp_path / "confusion.png"),
        plot_auc_vs_dose({1.0: (0.85, 0.8, 0.9), 0.5: (0.8, 0.72, 0.86), 0.1: (0.7, None, None)},
                         tmp_path / "dose.png"),
        plot_auc_by_modality({"CT": (0.75, 0.7, 0.8), "CT+FDG": (0.8, 0.74, 0.85), "all": (None, None, None)},
                             tmp_path / "modality.png"),
    ]
    for path in paths:
        _assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_plots_tolerate_an_absent_class(tmp_path):
    y, probs = _predictions()
    y = np.where(y == 2, 1, y)
    _assert_png(plot_roc_curves(y, probs, NAMES, tmp_path / "roc.png"))
    _assert_png(plot_calibration(y, probs, NAMES, tmp_path / "calibration.png"))


def test_confusion_matrix_shape_is_checked(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 2], [3, 4]], NAMES, tmp_path / "bad.png")
    assert not any(tmp_path.iterdir())


def test_report_writes_strict_json_and_every_figure(tmp_path):
    y, probs = _predictions(seed=1)
    y2, probs2 = _predictions(seed=2)
    y_two_classes = np.where(y2 == 2, 0, y2)
    noisy = 0.5 * probs + 0.5 / 3
    # "fold 1/val" and "fold 1 val" sanitise to the same file stem; the second also lacks a class.
    sections = {"fold 1/val": (y, probs), "fold 1 val": (y_two_classes, probs2)}
    report = write_evaluation_report(
        tmp_path / "eval", sections, NAMES, doses={1.0: (y, probs), 0.25: (y, noisy)},
        modalities={"CT": (y, noisy), "all": (y, probs)}, n_bootstrap=30)
    out = tmp_path / "eval"

    def reject_constant(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=reject_constant)
    assert on_disk == json.loads(json.dumps(report))
    assert list(on_disk["sections"]) == list(sections)
    assert list(on_disk["doses"]) == ["1", "0.25"]
    assert list(on_disk["modalities"]) == ["CT", "all"]
    overall = on_disk["sections"]["fold 1/val"]
    assert set(overall["decision_curves"]["classes"]) == set(NAMES)
    assert on_disk["doses"]["1"]["auc_macro"] == overall["auc_macro"]
    assert on_disk["doses"]["0.25"]["brier"] != overall["brier"]
    assert on_disk["sections"]["fold 1 val"]["auc_per_class"]["poor"] is None
    kinds = ("roc", "dca", "calibration", "confusion")
    assert len(on_disk["figures"]) == 2 * len(kinds) + 2
    assert {"roc_fold_1_val", "dca_fold_1_val", "auc_vs_dose", "auc_by_modality"} <= set(on_disk["figures"])
    assert len(set(on_disk["figures"].values())) == len(on_disk["figures"])  # no figure overwritten
    for name in on_disk["figures"].values():
        _assert_png(out / name)
    assert sorted(p.name for p in out.iterdir()) == sorted([*on_disk["figures"].values(), "metrics.json"])


def test_report_needs_a_section(tmp_path):
    with pytest.raises(ValueError):
        write_evaluation_report(tmp_path, {}, NAMES)
