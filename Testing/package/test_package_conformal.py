"""A package's conformal calibration: sealed with the metadata, checked when loaded, optional."""

import json

import numpy as np
import pytest

from model_packages import make_package
from reactkd.conformal import ConformalCalibration, calibrate
from reactkd.errors import ModelPackageError
from reactkd.package.model_package import METADATA_FILE, load_package, metadata_problems, seal_package


def calibration_block():
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    probs = rng.dirichlet(np.ones(3), 30)
    return {**calibrate(labels, probs, 0.9).to_dict(), "calibrated_on": "test", "notes": []}


def test_a_stored_calibration_round_trips_and_a_broken_one_is_a_metadata_problem(tmp_path):
    folder = make_package(tmp_path / "p")
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert "conformal" not in load_package(folder).metadata  # optional: old packages still load
    metadata["conformal"] = calibration_block()
    assert metadata_problems(metadata) == []
    assert ConformalCalibration.from_dict(metadata["conformal"]).level == 0.9
    metadata["conformal"]["scores"][2] = []
    assert any("invalid conformal calibration" in p for p in metadata_problems(metadata))
    assert metadata_problems({**metadata, "conformal": {"unavailable": "no calibration case of grade 2"}}) == []


def test_a_tampered_calibration_is_refused_by_the_metadata_checksum(tmp_path):
    folder = make_package(tmp_path / "p")
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata["conformal"] = calibration_block()
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    seal_package(folder)  # a deliberate, sealed edit loads
    assert load_package(folder).metadata["conformal"]["level"] == 0.9
    sealed = json.loads((folder / METADATA_FILE).read_text())
    sealed["conformal"]["scores"][0][0] = 0.0  # a quiet edit of one score
    (folder / METADATA_FILE).write_text(json.dumps(sealed))
    with pytest.raises(ModelPackageError, match="checksum|sha256"):
        load_package(folder)
