"""The input profile: out-of-distribution score and spacing ranges (reactkd.ood)."""

import json

import numpy as np
import pytest

from model_packages import make_package
from reactkd.ood import COMPONENTS, InputProfile, build_profile
from reactkd.package.model_package import METADATA_FILE, metadata_problems


def features(n, seed, shift=0.0, dims=64):
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, dims)  # a few strong directions, many weak ones (as network features)
    return rng.normal(size=(n, dims)) * scales + shift


SPACINGS = np.array([[0.7, 0.7, 2.5], [0.9, 0.9, 5.0], [0.8, 0.8, 3.0]])


def test_about_one_in_twenty_like_cases_is_flagged_and_shifted_ones_are():
    profile = build_profile(features(150, 0), features(400, 1), SPACINGS)
    assert len(profile.variances) == COMPONENTS
    alike = profile.distance(features(2000, 2))
    assert np.mean(alike > profile.threshold) == pytest.approx(0.05, abs=0.025)
    shifted = profile.distance(features(200, 3, shift=3.0))
    assert np.mean(shifted > profile.threshold) > 0.95


def test_spacing_outside_the_training_range_and_a_high_score_warn():
    profile = build_profile(features(150, 0), features(60, 1), SPACINGS)
    assert profile.pixel_mm == (0.7, 0.9) and profile.slice_mm == (2.5, 5.0)
    assert profile.warnings((0.8, 0.8, 5.2), 0.0) == []  # within the 5 % tolerance
    found = profile.warnings((0.5, 0.5, 10.0), profile.threshold + 1)
    assert [w.split(" ")[0] for w in found] == ["pixel", "slice", "this"]
    assert "out-of-distribution score" in found[2]


def test_a_profile_round_trips_and_a_broken_one_is_a_package_problem(tmp_path):
    profile = build_profile(features(150, 0), features(60, 1), SPACINGS)
    again = InputProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    probe = features(5, 4)
    assert again.distance(probe) == pytest.approx(profile.distance(probe), rel=1e-4)
    metadata = json.loads((make_package(tmp_path / "p") / METADATA_FILE).read_text())
    assert metadata_problems({**metadata, "input_profile": profile.to_dict()}) == []
    broken = {**profile.to_dict(), "variances": [-1.0] * len(profile.variances)}
    assert any("invalid input profile" in p for p in metadata_problems({**metadata, "input_profile": broken}))
    with pytest.raises(ValueError):
        InputProfile.from_dict({"method": "something else"})
