"""Training that fits: each network, at the shipped demo config's settings (learning rate, warm-up, head,
widths; a smaller grid to stay fast), memorises 12 synthetic cases. A network that cannot is a bug."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from reactkd.cli.main import main
from reactkd.cohort.cache import load_cohort
from reactkd.cohort.doses import load_dose_cache
from reactkd.cohort.manifest import read_manifest
from reactkd.training.config import load_config
from reactkd.training.sanity import balanced_subset, overfit

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "REACTKD/reactkd/configs/demo.yaml"
EPOCHS = {"student": 40, "teacher-sf": 30, "teacher-dose": 30}


@pytest.fixture(scope="module")
def handful(tmp_path_factory):
    root = tmp_path_factory.mktemp("overfit")
    assert main(["synth", "--out", str(root / "data"), "--cases", "24", "--seed", "5"]) == 0
    config = load_config(DEMO_CONFIG, preprocessing={"grid": [16, 32, 32], "margin_mm": 10.0})
    records = read_manifest(root / "data/manifest.csv")
    cohort = load_cohort(records, config.preprocess_config(), config.graph)
    cohort.dose_ct = torch.from_numpy(load_dose_cache(records, config.preprocess_config(), config.doses, cohort.key,
                                                      None))
    has_pet = cohort.available[:, 1:].any(dim=1).numpy()
    labels = cohort.labels.numpy().copy()
    labels[~has_pet] = -1  # the SF teacher needs PET: draw the handful among PET cases for every stage
    return cohort, config, balanced_subset(labels, 4)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["student", "teacher-sf", "teacher-dose"])
def test_each_network_memorises_a_handful_of_cases(handful, stage):
    cohort, config, indices = handful
    report = overfit(stage, cohort, indices, config, epochs=EPOCHS[stage])
    print(report)
    assert report.accuracy == 1.0, report
    assert report.final_loss < 0.1 * report.first_loss, report


@pytest.mark.slow
def test_the_check_fails_for_a_learning_rate_far_too_high(handful):
    """The same check must be able to fail: at 1e-2 the student does not fit."""
    cohort, config, indices = handful
    report = overfit("student", cohort, indices, dataclasses.replace(config, learning_rate=1e-2), epochs=10)
    assert report.accuracy < 1.0 or report.final_loss > 0.1 * report.first_loss
