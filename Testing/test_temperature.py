"""Temperature scaling is applied only where it lowers NLL on cases it was not fitted on (reactkd.temperature)."""

import numpy as np
import pytest

from model_packages import make_package
from reactkd.temperature import (
    choose_temperature,
    package_temperature,
    stratified_folds,
    temperature_problems,
    with_temperature,
)


def draws(n, seed, sharpen):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3) * 0.8, n)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    return labels, with_temperature(probs, 1 / sharpen)


def test_an_overconfident_model_gets_a_temperature_and_a_calibrated_one_does_not():
    labels, sharp = draws(400, 0, sharpen=2.5)
    chosen = choose_temperature(labels, sharp)
    assert chosen["applied"] and chosen["value"] == pytest.approx(2.5, rel=0.25)
    assert chosen["nll_after_cross_fitted"] < chosen["nll_before"]
    labels, calibrated = draws(60, 1, sharpen=1.0)
    kept = choose_temperature(labels, calibrated)
    assert kept["value"] == 1.0 or kept["nll_after_cross_fitted"] < kept["nll_before"]  # applied only with a gain
    tiny = choose_temperature(np.array([0, 1, 2, 2]), np.full((4, 3), 1 / 3))
    assert not tiny["applied"] and tiny["value"] == 1.0


def test_folds_are_stratified_and_the_package_block_is_checked():
    folds = stratified_folds(np.repeat([0, 1, 2], [10, 7, 5]), 5)
    for grade, n in ((0, 10), (1, 7), (2, 5)):
        counts = np.bincount(folds[np.repeat([0, 1, 2], [10, 7, 5]) == grade], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
    assert package_temperature({}) == 1.0
    assert package_temperature({"temperature": {"value": 2.0, "applied": False}}) == 1.0
    assert package_temperature({"temperature": {"value": 2.0, "applied": True}}) == 2.0
    assert temperature_problems({"value": 2.0, "applied": True}) == []
    assert temperature_problems({"value": float("nan"), "applied": True})
    assert temperature_problems({"value": 0.0, "applied": True}) and temperature_problems("2")


def test_classify_divides_the_logits_by_the_package_temperature(tmp_path):
    from reactkd.cohort.synth import generate_case
    from reactkd.inference.classifier import Classifier

    case = generate_case(3, 2, size="small")
    plain = Classifier(make_package(tmp_path / "plain"), device="cpu").classify(case.ct, case.mask)
    hot = make_package(tmp_path / "hot", extra_metadata={"temperature": {"value": 4.0, "applied": True}})
    flat = Classifier(hot, device="cpu").classify(case.ct, case.mask)
    expected = with_temperature(np.array([list(plain.probabilities.values())]), 4.0)[0]
    assert list(flat.probabilities.values()) == pytest.approx(expected, abs=1e-5)
    assert flat.grade == plain.grade
