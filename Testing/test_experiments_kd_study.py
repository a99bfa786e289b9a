"""The distillation study's driver (experiments/kd_study.py): its decision rule, its teacher arguments and its
report on stored runs (paired by seed, the null world's reuse checked), without training anything."""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module("kd_study")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def contrast(values):
    from reactkd.evaluation.study import run_level

    return {"run_level": run_level(values)}


def test_decision_rule_follows_the_preregistration(study):
    name = study.CONTRASTS[0][0]
    assert study.reading({name: contrast([0.03, 0.035, 0.04, 0.03])})[name].startswith("supported")
    assert study.reading({name: contrast([0.0, 0.005, -0.004, 0.002])})[name].startswith("not supported")
    assert study.reading({name: contrast([0.05, -0.03, 0.04, -0.01])})[name].startswith("inconclusive")
    assert study.reading({name: contrast([0.01, 0.012, 0.011, 0.013])})[name].startswith("not supported")
    assert study.reading({})[name] == "not enough runs"


def test_teacher_arguments_keep_only_the_weighted_kind(study):
    arguments = ["--teacher-sf", "s0", "s1", "--teacher-dose", "d0", "d1"]
    assert study.used_teacher_arguments(arguments, [1.0, 0.0]) == ["--teacher-sf", "s0", "s1"]
    assert study.used_teacher_arguments(arguments, [0.0, 1.0]) == ["--teacher-dose", "d0", "d1"]
    assert study.used_teacher_arguments(arguments, [0.5, 0.5]) == arguments


def test_report_pairs_runs_by_seed(study, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    monkeypatch.setattr(study, "handcrafted_reference", lambda root, world: {})

    def write(arm, seed, signal):
        logits = rng.normal(size=(90, 3)) + signal * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        from reactkd.evaluation.study import run_metrics

        record = {"arm": arm, "seed": seed, "labels": labels.tolist(), "probabilities": probs.tolist(),
                  "metrics": run_metrics(labels, probs), "gradcam_within_5mm": {"test-v2": 0.2, "cam-clinical": 0.4},
                  "train_seconds": 10.0, "final_train_loss": 0.2, "final_train_cls": 0.1}
        folder = tmp_path / "runs" / arm
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"seed-{seed}.json").write_text(json.dumps(record))

    for seed in range(4):
        write("none", seed, 1.0)
        write("kd_oracle", seed, 2.0)
    write("kd_cross_fitted", 0, 1.0)  # one run only: no interval
    result = study.report(tmp_path)
    h2 = result["contrasts"][study.CONTRASTS[1][0]]
    assert h2["seeds"] == [0, 1, 2, 3] and h2["run_level"]["mean"] > 0.05 and h2["hierarchical"]["ci95"][0] > 0
    assert result["reading"][study.CONTRASTS[1][0]].startswith("supported")
    assert result["reading"][study.CONTRASTS[0][0]] == "not enough runs"
    assert result["arms"]["none"]["gradcam_within_5mm_both_sizes"]["mean"] == pytest.approx(0.3)
