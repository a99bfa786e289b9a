"""Integration: synthetic cohort -> both teachers -> student -> evaluate, resume after SIGKILL, DDP (gloo)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reactkd.cli.main import main
from reactkd.package.model_package import verify_package
from tiny_training import CHILD_ENV, TINY_CONFIG

TINY, ENV = TINY_CONFIG, CHILD_ENV
IN_SAMPLE = ("--teacher-targets", "in_sample")  # 12 cases are too few to cross-fit teachers


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
                 "--teacher-dose", str(dose), *IN_SAMPLE) == 0
    metadata = verify_package(tmp_path / "student")
    history = metadata["training"]["history"]
    assert len(history) == 1 and {"train_kd", "train_rgd", "train_cls"} <= set(history[0])
    assert main(["evaluate", "--manifest", str(cohort / "data/manifest.csv"), "--model", str(tmp_path / "student"),
                 "--out", str(tmp_path / "eval"), "--doses", "1,0.25", "--device", "cpu", "--progress", "none"]) == 0
    report = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(report["doses"]) == {"1", "0.25"} and "ct" in report["modalities"]
    assert (tmp_path / "eval/roc_overall.png").stat().st_size > 1000


def test_student_without_teachers_is_refused(cohort, tmp_path, capsys):
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
    # The training time adds up across the resume; resuming a finished run rewrites the package, not the time.
    seconds = verify_package(killed)["training"]["train_seconds"]
    subprocess.run(_command(cohort, killed, 2, "--resume"), check=True, env=ENV, capture_output=True)
    assert seconds > 0 and verify_package(killed)["training"]["train_seconds"] == seconds


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
def test_student_uses_the_teacher_cache_and_refuses_mismatched_teachers(cohort, teachers, tmp_path, capsys,
                                                                       monkeypatch):
    from reactkd.training import teacher_cache

    sf, dose = teachers
    cache = cohort / "data/.reactkd-cache"
    before = set(cache.glob("teachers-*.safetensors"))
    assert train(cohort, "student", tmp_path / "s1", "--epochs", "1", "--teacher-sf", str(sf),
                 "--teacher-dose", str(dose), *IN_SAMPLE) == 0
    built = set(cache.glob("teachers-*.safetensors"))
    assert built == before if before else len(built) == 1  # one file for these teachers, never one per run

    def teachers_must_not_run(*args, **kwargs):
        raise AssertionError("the second student ran the teachers instead of reading the cache")

    monkeypatch.setattr(teacher_cache, "compute_teacher_targets", teachers_must_not_run)
    assert train(cohort, "student", tmp_path / "s1b", "--epochs", "1", "--teacher-sf", str(sf),
                 "--teacher-dose", str(dose), *IN_SAMPLE) == 0
    monkeypatch.undo()
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
                 "--epochs", "1", "--teacher-sf", str(sf), "--teacher-dose", str(dose), *IN_SAMPLE])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "preprocessing" in err and "Traceback" not in err


def test_student_without_distillation_needs_no_teacher(cohort, tmp_path):
    plain = cohort / "no-kd.yaml"
    plain.write_text(TINY + "alpha: 0.0\nlambda_graph: 0.0\n")
    code = main(["train", "--stage", "student", "--manifest", str(cohort / "data/manifest.csv"), "--out",
                 str(tmp_path / "plain"), "--config", str(plain), "--device", "cpu", "--progress", "none",
                 "--epochs", "1"])
    assert code == 0
    metadata = verify_package(tmp_path / "plain")
    history = metadata["training"]["history"]
    assert set(history[0]) == {"epoch", "train_cls", "train_total", "val_macro_auc"}
    # Every package carries its input profile: the fit cases' spacings and features, the validation threshold.
    profile = metadata["input_profile"]
    assert (profile["n_fit"], profile["n_val"]) == (metadata["training"]["n_train"], metadata["training"]["n_val"])
    assert profile["threshold"] > 0 and profile["pixel_mm"][0] <= profile["pixel_mm"][1]
    temperature = metadata["temperature"]  # applied or not, always with the reason
    assert isinstance(temperature["applied"], bool) and temperature["why"]
    assert "after the package's temperature" in metadata["conformal"].get("calibrated_on", "after the package's temperature")


def _evaluate(cohort: Path, model: Path, out: Path, *extra: str, manifest: str = "data/manifest.csv") -> int:
    return main(["evaluate", "--manifest", str(cohort / manifest), "--model", str(model), "--out", str(out),
                 "--doses", "1", "--modalities", "ct", "--device", "cpu", "--progress", "none", *extra])


@pytest.mark.slow
def test_evaluate_fold_scores_exactly_the_cases_training_held_out(cohort, teachers, tmp_path, capsys):
    _, dose = teachers  # trained with the defaults: fold 0 of 3 held out
    training = verify_package(dose)["training"]
    assert len(training["test_cases"]) == training["n_test"] > 0
    assert _evaluate(cohort, dose, tmp_path / "held-out", "--fold", "0") == 0  # --folds from the package
    report = json.loads((tmp_path / "held-out/metrics.json").read_text())
    assert report["sections"]["overall"]["n_samples"] == training["n_test"]
    for extra, words in ((("--fold", "1"), "use --fold 0 --folds 3"), (("--fold", "0", "--folds", "4"), "fold 0 of 4")):
        capsys.readouterr()
        assert _evaluate(cohort, dose, tmp_path / "refused", *extra) == 2
        err = capsys.readouterr().err
        assert words in err and "trained with fold 0 of 3" in err and "Traceback" not in err
    # The same fold of an edited manifest (one case gone) holds other cases: refused, not silently scored.
    rows = (cohort / "data/manifest.csv").read_text().splitlines()
    (cohort / "data/edited.csv").write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    capsys.readouterr()
    assert _evaluate(cohort, dose, tmp_path / "edited", "--fold", "0", manifest="data/edited.csv") == 2
    assert "not the set of cases the model was trained without" in capsys.readouterr().err


@pytest.mark.slow
def test_student_refuses_teachers_that_saw_its_test_cases(cohort, teachers, tmp_path, capsys):
    sf, dose = teachers  # fold 0 held out
    for extra in (("--fold", "1"), ("--seed", "5")):
        capsys.readouterr()
        assert train(cohort, "student", tmp_path / "student", "--epochs", "1", "--teacher-sf", str(sf),
                     "--teacher-dose", str(dose), *IN_SAMPLE, *extra) == 2
        err = capsys.readouterr().err
        assert "has seen some of the student's test cases" in err and "Traceback" not in err
    assert not (tmp_path / "student/checkpoint").exists()


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_run(cohort, tmp_path, capsys):
    plain = cohort / "resume-no-kd.yaml"
    plain.write_text(TINY + "alpha: 0.0\nlambda_graph: 0.0\n")
    out = tmp_path / "run"
    assert train(cohort, "teacher-dose", out, "--epochs", "1") == 0
    state = (out / "checkpoint/state.json").read_bytes()
    for stage, extra, words in (("teacher-dose", ("--epochs", "2"), "config.epochs (1 then, 2 now)"),
                                ("student", ("--epochs", "1", "--config", str(plain)), "stage ('teacher-dose' then, "
                                 "'student' now)")):
        capsys.readouterr()
        assert train(cohort, stage, out, "--resume", *extra) == 2
        err = capsys.readouterr().err
        assert "belongs to another run" in err and words in err and "Traceback" not in err
    assert (out / "checkpoint/state.json").read_bytes() == state  # the refused runs changed nothing
    assert train(cohort, "teacher-dose", out, "--resume", "--epochs", "1") == 0  # the same run still resumes
