"""Integration: synthetic cohort -> both teachers -> student -> evaluate, resume after SIGKILL, DDP (gloo)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reactkd.cli import main
from reactkd.packaging import verify_package
from tiny_training import CHILD_ENV, TINY_CONFIG

TINY, ENV = TINY_CONFIG, CHILD_ENV


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    assert main(["synth", "--out", str(root / "data"), "--cases", "12", "--seed", "3"]) == 0
    (root / "tiny.yaml").write_text(TINY)
    return root


def train(cohort: Path, stage: str, out: Path, *extra: str) -> int:
    return main(["train", "--stage", stage, "--manifest", str(cohort / "data/manifest.csv"), "--out", str(out),
                 "--config", str(cohort / "tiny.yaml"), "--device", "cpu", "--progress", "none", *extra])


@pytest.fixture(scope="module")
def teachers(cohort):
    assert train(cohort, "teacher-sf", cohort / "sf", "--epochs", "1") == 0
    assert train(cohort, "teacher-dose", cohort / "dose", "--epochs", "1") == 0
    return cohort / "sf", cohort / "dose"


@pytest.mark.slow
def test_three_stages_then_evaluate(cohort, teachers, tmp_path):
    sf, dose = teachers
    for folder, stage in ((sf, "teacher-sf"), (dose, "teacher-dose")):
        metadata = verify_package(folder)
        assert metadata["stage"] == stage and metadata["preprocessing"]["grid"] == [32, 32, 32]
    assert train(cohort, "student", tmp_path / "student", "--epochs", "1", "--teacher-sf", str(sf),
                 "--teacher-dose", str(dose)) == 0
    metadata = verify_package(tmp_path / "student")
    history = metadata["training"]["history"]
    assert len(history) == 1 and {"train_kd", "train_rgd", "train_cls"} <= set(history[0])
    assert main(["evaluate", "--manifest", str(cohort / "data/manifest.csv"), "--model", str(tmp_path / "student"),
                 "--out", str(tmp_path / "eval"), "--doses", "1,0.25", "--device", "cpu", "--progress", "none"]) == 0
    report = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(report["doses"]) == {"1", "0.25"} and "ct" in report["modalities"]
    assert (tmp_path / "eval/roc_overall.png").stat().st_size > 1000


def test_student_without_teachers_and_existing_run_are_refused(cohort, tmp_path, capsys):
    assert train(cohort, "student", tmp_path / "student", "--epochs", "1") == 2
    assert "--teacher-sf" in capsys.readouterr().err


def _command(cohort: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reactkd", "train", "--stage", "teacher-dose", "--manifest",
            str(cohort / "data/manifest.csv"), "--out", str(out), "--config", str(cohort / "tiny.yaml"),
            "--device", "cpu", "--epochs", str(epochs), "--progress", "json", *extra]


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(cohort, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(cohort, reference, 2), check=True, env=ENV, capture_output=True)
    killed = tmp_path / "killed"
    child = subprocess.Popen(_command(cohort, killed, 2), stdout=subprocess.PIPE, text=True, env=ENV)
    for line in child.stdout:  # kill in the middle of the second epoch
        event = json.loads(line)
        if event["event"] == "step" and event["epoch"] == 1:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL and not (killed / "model.safetensors").exists()
    refused = subprocess.run(_command(cohort, killed, 2), env=ENV, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    subprocess.run(_command(cohort, killed, 2, "--resume"), check=True, env=ENV, capture_output=True)
    assert (killed / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_distributed_data_parallel_with_gloo(cohort, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
               "-m", "reactkd", *_command(cohort, out, 1)[3:]]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = verify_package(out)
    assert metadata["training"]["world_size"] == 2
    assert sum(json.loads(line)["event"] == "done" for line in result.stdout.splitlines() if line.startswith("{")) == 1


@pytest.mark.slow
def test_student_uses_the_teacher_cache_and_refuses_mismatched_teachers(cohort, teachers, tmp_path, capsys):
    sf, dose = teachers
    cache = cohort / "data/.reactkd-cache"
    before = set(cache.glob("teachers-*.safetensors"))
    assert train(cohort, "student", tmp_path / "s1", "--epochs", "1", "--teacher-sf", str(sf),
                 "--teacher-dose", str(dose)) == 0
    built = set(cache.glob("teachers-*.safetensors"))
    assert len(built) == 1 or built - before  # written by this or the earlier student run, never one per run
    metadata = verify_package(tmp_path / "s1")
    assert metadata["training"]["n_test"] > 0 and "inner validation" in metadata["training"]["selection"]
    assert metadata["architecture_args"]["head"] == "region"
    # A teacher trained with other preprocessing settings is refused with one error line.
    other = cohort / "other-margin.yaml"
    other.write_text(TINY.replace("preprocessing: {grid: [32, 32, 32]}",
                                  "preprocessing: {grid: [32, 32, 32], margin_mm: 12.0}"))
    capsys.readouterr()
    code = main(["train", "--stage", "student", "--manifest", str(cohort / "data/manifest.csv"), "--out",
                 str(tmp_path / "s2"), "--config", str(other), "--device", "cpu", "--progress", "none",
                 "--epochs", "1", "--teacher-sf", str(sf), "--teacher-dose", str(dose)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "preprocessing" in err and "Traceback" not in err


def test_student_without_distillation_needs_no_teacher(cohort, tmp_path):
    plain = cohort / "no-kd.yaml"
    plain.write_text(TINY + "alpha: 0.0\nlambda_graph: 0.0\n")
    code = main(["train", "--stage", "student", "--manifest", str(cohort / "data/manifest.csv"), "--out",
                 str(tmp_path / "plain"), "--config", str(plain), "--device", "cpu", "--progress", "none",
                 "--epochs", "1"])
    assert code == 0
    history = verify_package(tmp_path / "plain")["training"]["history"]
    assert set(history[0]) == {"epoch", "train_cls", "train_total", "val_macro_auc"}
