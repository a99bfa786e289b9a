"""Evaluation of prediction sets (coverage with exact intervals) and of calibration (classwise ECE with
intervals, a cross-fitted temperature), against what the numbers must be."""

import numpy as np
import pytest

from graded_draws import graded_draws
from reactkd.conformal import calibrate
from reactkd.evaluation.calibration import calibration_report
from reactkd.evaluation.coverage import coverage_report
from reactkd.evaluation.report import write_evaluation_report
from reactkd.temperature import fit_temperature, with_temperature

NAMES = ["well", "moderate", "poor"]


def overconfident(n, seed, sharpen=2.0):
    """Calibrated draws (labels drawn from the probabilities), then sharpened by 1 / T = `sharpen`."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3) * 0.8, n)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return labels, with_temperature(probs, 1 / sharpen), probs


def test_coverage_on_exchangeable_cases_reaches_the_level_per_grade():
    labels, probs, _ = overconfident(3000, 0)
    calibration = calibrate(labels[:1500], probs[:1500], 0.8)
    report = coverage_report(labels[1500:], probs[1500:], calibration, NAMES)
    assert report["coverage"] == pytest.approx(0.8, abs=0.03)
    low, high = report["coverage_ci95"]
    assert low < report["coverage"] < high and high - low < 0.06
    for name in NAMES:
        assert report["coverage_per_class"][name]["coverage"] >= 0.8 - 0.06
    assert sum(report["set_sizes"].values()) == 1500
    assert report["mean_set_size_ci95"][0] <= report["mean_set_size"] <= report["mean_set_size_ci95"][1]


def test_coverage_interval_is_the_exact_binomial_one():
    labels = np.zeros(10, dtype=int)
    probs = np.tile([0.9, 0.05, 0.05], (10, 1))
    calibration = calibrate(np.arange(30) % 3, np.tile([0.34, 0.33, 0.33], (30, 1)), 0.9)
    report = coverage_report(labels, probs, calibration, NAMES)
    assert report["coverage"] == 1.0
    assert report["coverage_ci95"] == pytest.approx([0.6915, 1.0], abs=1e-4)  # Clopper-Pearson, 10 of 10


def test_a_cross_fitted_temperature_undoes_overconfidence_and_leaves_calibration_alone():
    labels, sharp, calibrated = overconfident(1200, 1)
    assert fit_temperature(labels, sharp) == pytest.approx(2.0, rel=0.15)
    report = calibration_report(labels, sharp, n_bootstrap=100)
    assert report["temperature"]["improves_nll"]
    before, after = report["before"], report["temperature"]["after"]
    assert after["nll"]["value"] < before["nll"]["value"] and after["ece_classwise"]["value"] < \
        before["ece_classwise"]["value"]
    low, high = before["ece_classwise"]["ci95"]
    assert low <= before["ece_classwise"]["value"] <= high
    honest = calibration_report(labels, calibrated, n_bootstrap=100)["temperature"]
    assert all(t == pytest.approx(1.0, abs=0.2) for t in honest["per_fold"])


def test_too_few_cases_of_a_grade_gives_no_temperature():
    report = calibration_report(np.array([0, 0, 1, 1, 2]), np.full((5, 3), 1 / 3), n_bootstrap=10)
    assert "unavailable" in report["temperature"]


def test_the_report_gives_coverage_per_section_subset_and_dose(tmp_path):
    labels, probs = graded_draws(200, seed=3, signal=1.5)
    calibration = calibrate(labels[:100], probs[:100])
    held = (labels[100:], probs[100:])
    report = write_evaluation_report(tmp_path, {"overall": held}, NAMES, doses={1.0: held, 0.5: held},
                                     modalities={"ct": held}, n_bootstrap=50, conformal=calibration)
    assert report["sections"]["overall"]["prediction_sets"]["n"] == 100
    assert report["doses"]["0.5"]["prediction_sets"]["level"] == 0.9
    assert "coverage" in report["modalities"]["ct"]["prediction_sets"]
    assert "temperature" in report["sections"]["overall"]["calibration"]
    bare = write_evaluation_report(tmp_path / "bare", {"overall": held}, NAMES, n_bootstrap=50,
                                   no_set_reason="the model package has no conformal calibration")
    assert bare["sections"]["overall"]["prediction_sets"] == {
        "unavailable": "the model package has no conformal calibration"}
