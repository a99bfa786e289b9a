"""experiments/temperature_check.py and experiments/ood_check.py on a tiny cohort: the figures they print are
the package's own (temperature applied or not, the stored threshold) and follow from its predictions."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_packages import make_package
from reactkd.cli.main import main
from reactkd.ood import build_profile

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    assert main(["synth", "--out", str(root), "--cases", "9", "--size", "small", "--seed", "5"]) in (0, None)
    return root / "manifest.csv"


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_temperature_check_compares_with_and_without_the_package_temperature(cohort, tmp_path):
    package = make_package(tmp_path / "hot", extra_metadata={"temperature": {"value": 3.0, "applied": True}})
    found = run("temperature_check.py", "--model", str(package), "--manifest", str(cohort), "--bootstrap", "50")
    assert found["temperature"] == 3.0 and found["n"] == 9
    assert found["with"] != found["without"]
    low, high = found["difference_ci95"]["nll"]
    assert low <= high


def test_ood_check_reports_the_share_above_the_stored_threshold(cohort, tmp_path):
    plain = make_package(tmp_path / "plain")
    from reactkd.package.model_package import load_package

    model = load_package(plain).model
    with torch.no_grad():
        channels = model(torch.zeros(1, 3, 16, 32, 32), torch.ones(1, 3, dtype=torch.bool),
                         torch.ones(1, 16, 32, 32, dtype=torch.long)).features.shape[1]
    rng = np.random.default_rng(0)
    for threshold, share in ((0.0, 1.0), (1e9, 0.0)):  # everything flagged, nothing flagged
        profile = build_profile(rng.normal(size=(20, channels)), rng.normal(size=(10, channels)),
                                np.array([[1.0, 1.0, 1.0]] * 20), components=3).to_dict()
        package = make_package(tmp_path / f"t{threshold}", extra_metadata={"input_profile": {**profile,
                                                                                         "threshold": threshold}})
        found = run("ood_check.py", "--model", str(package), "--manifest", str(cohort), "--limit", "6")
        assert found["n"] == 6 and found["flagged_share"] == share and found["threshold"] == threshold
