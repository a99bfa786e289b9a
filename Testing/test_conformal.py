"""Conformal prediction sets: the p-values and sets of crepes (the test oracle), the class-conditional coverage
guarantee on exchangeable draws, contiguity over the ordinal grades, and refusals."""

import numpy as np
import pytest

from graded_draws import graded_draws
from reactkd.conformal import ConformalCalibration, calibrate, coverage, describe, p_values, prediction_sets
from reactkd.errors import ConfigError


def draw(n, seed, signal=1.2):
    return graded_draws(n, seed, signal)


def test_p_values_and_sets_match_crepes_mondrian_classifier():
    crepes = pytest.importorskip("crepes")
    y_cal, p_cal = draw(150, 0)
    y_test, p_test = draw(80, 1)
    calibration = calibrate(y_cal, p_cal, level=0.8)
    oracle = crepes.ConformalClassifier().fit(1 - p_cal[np.arange(150), y_cal], bins=y_cal)
    expected = np.stack([oracle.predict_p(1 - p_test, bins=np.full(80, k), smoothing=False)[:, k] for k in range(3)], 1)
    np.testing.assert_allclose(p_values(calibration, p_test), expected)
    raw = np.stack([oracle.predict_set(1 - p_test, bins=np.full(80, k), confidence=0.8, smoothing=False)[:, k]
                    for k in range(3)], 1).astype(bool)
    sets = prediction_sets(calibration, p_test)
    assert np.all(sets >= raw)  # ours only adds grades (contiguity, never empty) ...
    added = sets & ~raw
    for row in np.nonzero(added.any(1))[0]:  # ... and only those
        members = np.nonzero(raw[row])[0]
        if len(members):
            assert set(np.nonzero(added[row])[0]) <= set(range(members.min(), members.max() + 1))
        else:
            assert np.nonzero(sets[row])[0].tolist() == [int(p_test[row].argmax())]


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_class_conditional_coverage_holds_on_exchangeable_draws(level):
    hits = []
    for seed in range(40):
        y_cal, p_cal = draw(240, 100 + seed)
        y_test, p_test = draw(300, 200 + seed)
        result = coverage(y_test, prediction_sets(calibrate(y_cal, p_cal, level), p_test))
        hits.append(result["coverage_per_class"])
    per_class = np.mean(hits, axis=0)
    assert np.all(per_class >= level - 0.015) and np.all(per_class <= level + 0.06)


def test_sets_are_contiguous_and_never_empty():
    y_cal, p_cal = draw(90, 3, signal=0.3)
    sets = prediction_sets(calibrate(y_cal, p_cal, 0.6), draw(500, 4, signal=0.3)[1])
    assert sets.any(1).all()
    for row in sets:
        members = np.nonzero(row)[0]
        assert members.tolist() == list(range(members.min(), members.max() + 1))


def test_round_trip_notes_and_refusals():
    y_cal, p_cal = draw(60, 5)
    calibration = calibrate(y_cal, p_cal, 0.9)
    again = ConformalCalibration.from_dict(calibration.to_dict())
    assert again == calibration and sum(again.n_per_class) == 60
    small = calibrate([0, 1, 2, 2], np.full((4, 3), 1 / 3), 0.9)
    assert len(small.notes) == 3 and "fewer than the 10" in small.notes[0]
    assert prediction_sets(small, p_cal[:5]).all()  # too few cases: every grade in every set
    for level in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            calibrate(y_cal, p_cal, level)
    with pytest.raises(ConfigError, match="no calibration case of grade 2"):
        calibrate([0, 1], p_cal[:2])
    tampered = calibration.to_dict()
    tampered["scores"][1] = [1.5]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ConformalCalibration.from_dict(tampered)
    assert describe(["moderate", "poor"], 0.9) == "moderate or poor, 90 % set"
    assert describe(["well"], 0.8) == "well, 80 % set"


def test_a_stored_calibration_is_read_at_its_level_or_another_and_explains_its_absence():
    from reactkd.conformal import REFER, case_set, from_metadata

    labels = np.arange(60) % 3
    probs = np.random.default_rng(1).dirichlet(np.ones(3), 60)
    block = calibrate(labels, probs, 0.9).to_dict()
    names = ["well", "moderate", "poor"]
    stored, reason = from_metadata({"conformal": block, "class_names": names})
    assert reason is None and stored.level == 0.9
    other, _ = from_metadata({"conformal": block, "class_names": names}, level=0.5)
    assert other.level == 0.5 and other.scores == stored.scores
    assert from_metadata({"class_names": names})[0] is None
    assert "grade 2" in from_metadata({"conformal": {"unavailable": "no case of grade 2"}, "class_names": names})[1]
    with pytest.raises(ConfigError):
        from_metadata({"conformal": block, "class_names": names}, level=1.0)
    single = case_set(stored, [0.98, 0.01, 0.01], names)
    assert single["prediction_set"] == ["well"] and single["prediction_set_text"] == "well, 90 % set"
    wide = case_set(stored, [0.34, 0.33, 0.33], names)
    assert len(wide["prediction_set"]) > 1 and wide["prediction_set_text"].startswith(REFER)
    none = case_set(None, [0.5, 0.3, 0.2], names, reason="why not")
    assert none["prediction_set"] is None and none["prediction_set_text"] == "no prediction set: why not"
