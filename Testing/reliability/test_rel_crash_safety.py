"""Crash safety: writes interrupted by a failing disk leave the old file or nothing (never a partial file, no
temporary files); a checkpoint is consistent after a kill between its two files; training killed with
SIGKILL at random moments always leaves a loadable checkpoint and resumes to the uninterrupted result."""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from rel_support import CHILD_ENV, TINY_CONFIG, files_under

from reactkd import atomic
from reactkd.images.writers import write_image
from reactkd.package.model_package import METADATA_FILE, WEIGHTS_FILE, save_package, verify_package


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device (simulated)")


def _image(value: float) -> sitk.Image:
    image = sitk.GetImageFromArray(np.full((4, 5, 6), value, np.float32))
    image.SetSpacing((0.8, 0.9, 2.5))
    return image


def _half_then_fail(real_write):
    """A stand-in for sitk.WriteImage that writes half of the real file, then fails like a full disk."""
    def write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise disk_full()
    return write


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("existing", [False, True])
def test_write_image_interrupted_leaves_old_file_or_nothing(suffix, existing, tmp_path, monkeypatch):
    target = tmp_path / f"image{suffix}"
    if existing:
        write_image(_image(1.0), target)
    before = target.read_bytes() if existing else None
    monkeypatch.setattr(sitk, "WriteImage", _half_then_fail(sitk.WriteImage))
    with pytest.raises(OSError, match="No space left"):
        write_image(_image(2.0), target)
    assert files_under(tmp_path) == ({target.name} if existing else set())
    if existing:
        assert target.read_bytes() == before


class _FailingFile:
    """File wrapper whose write stores half of the data, then fails like a full disk."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise disk_full()

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("existing", [False, True])
def test_write_text_atomic_interrupted_leaves_old_file_or_nothing(existing, tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    if existing:
        atomic.write_text_atomic(target, '{"old": true}\n')
    monkeypatch.setattr(atomic, "open", lambda path, mode="r", *a, **k: _FailingFile(open(path, mode, *a, **k)),
                        raising=False)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(target, json.dumps({"new": list(range(1000))}))
    assert files_under(tmp_path) == ({target.name} if existing else set())
    if existing:
        assert target.read_text() == '{"old": true}\n'


def _package(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 3)
    return save_package(model, folder, {"name": "m", "version": "1", "architecture": "student",
                                        "architecture_args": {}, "class_names": ["a", "b", "c"],
                                        "input_modalities": ["ct"], "preprocessing": {}})


def test_save_package_interrupted_keeps_the_old_package(tmp_path, monkeypatch):
    import safetensors.torch

    folder = _package(tmp_path / "pkg", seed=0)
    before = {name: (folder / name).read_bytes() for name in (WEIGHTS_FILE, METADATA_FILE)}
    real_save = safetensors.torch.save_file

    def half_then_fail(tensors, path, *args, **kwargs):
        real_save(tensors, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise disk_full()

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _package(folder, seed=1)
    assert files_under(folder) == set(before)
    assert {name: (folder / name).read_bytes() for name in before} == before
    verify_package(folder)


def test_save_package_interrupted_between_files_is_refused_not_misread(tmp_path, monkeypatch):
    """Weights replaced, metadata write failed: the package is refused (checksum), never loaded half-new."""
    from reactkd.errors import ModelPackageError
    from reactkd.package import model_package as packaging

    folder = _package(tmp_path / "pkg", seed=0)
    monkeypatch.setattr(packaging, "write_text_atomic", lambda *a, **k: (_ for _ in ()).throw(disk_full()))
    with pytest.raises(OSError):
        _package(folder, seed=1)
    assert files_under(folder) == {WEIGHTS_FILE, METADATA_FILE}
    with pytest.raises(ModelPackageError, match="checksum mismatch"):
        verify_package(folder)


def test_classify_outputs_interrupted_leave_no_partial_set(tmp_path, monkeypatch):
    from reactkd.inference import outputs
    from reactkd.inference.result import ClassificationResult

    result = ClassificationResult(grade="well", class_index=0, class_names=["well", "moderate", "poor"],
                                  probabilities={"well": 0.6, "moderate": 0.3, "poor": 0.1},
                                  attention_cbam=_image(0.5), attention_gradcam=_image(0.25),
                                  graph={"nodes": [], "edges": []}, model={}, device="cpu", inputs=["ct"],
                                  timings_ms={})
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("earlier result\n")
    real = outputs.write_text_atomic

    def fail_on_result(path, text):
        if Path(path).name == "result.json":
            raise disk_full()
        real(path, text)

    monkeypatch.setattr(outputs, "write_text_atomic", fail_on_result)
    with pytest.raises(OSError):
        outputs.write_outputs(result, out, _image(0.0), _image(0.0), render=False)
    assert files_under(out) == {"result.json"} and (out / "result.json").read_text() == "earlier result\n"


def test_synth_interrupted_leaves_no_manifest(tmp_path, monkeypatch):
    from reactkd.cohort.synth import cohort

    calls = []
    real = cohort.generate_case

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise disk_full()
        return real(*args, **kwargs)

    monkeypatch.setattr(cohort, "generate_case", fail_on_second)
    with pytest.raises(OSError):
        cohort.write_cohort(tmp_path / "cohort", 3, seed=1)
    assert not (tmp_path / "cohort" / "manifest.csv").exists()
    assert all(not name.startswith(".") and "/." not in name for name in files_under(tmp_path / "cohort"))


def test_checkpoint_killed_between_its_two_files_resumes_consistently(tmp_path, monkeypatch):
    """New state.safetensors, old state.json (a kill between the two renames): resuming must not mix them."""
    from reactkd.training import checkpoint

    def make(seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()
        return model, optimizer

    folder = tmp_path / "checkpoint"
    model0, optim0 = make(0)
    checkpoint.save_checkpoint(folder, model0, optim0, None, {"epoch": 0, "history": [0]})
    model1, optim1 = make(1)
    monkeypatch.setattr(checkpoint, "write_text_atomic", lambda *a, **k: (_ for _ in ()).throw(disk_full()))
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(folder, model1, optim1, None, {"epoch": 1, "history": [0, 1]})
    assert json.loads((folder / checkpoint.INFO_FILE).read_text())["epoch"] == 0  # the stale copy
    restored, optimizer = make(2)
    info = checkpoint.load_checkpoint(folder, restored, optimizer, None)
    assert info["epoch"] == 1 and info["history"] == [0, 1]
    assert torch.equal(restored.weight, model1.weight)


# ------------------------------------------------------------------------------------------ SIGKILL
EPOCHS = 2


def _train_command(cohort: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reactkd", "train", "--stage", "teacher-dose", "--manifest",
            str(cohort / "data" / "manifest.csv"), "--out", str(out), "--config", str(cohort / "tiny.yaml"),
            "--device", "cpu", "--epochs", str(EPOCHS), "--progress", "json", *extra]


def _check_checkpoint(folder: Path) -> int | None:
    """Every checkpoint file present parses and loads; returns the epoch the tensors file holds."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from reactkd.training.checkpoint import INFO_FILE, INFO_KEY, STATE_FILE

    if not (folder / STATE_FILE).exists():
        return None
    with safe_open(str(folder / STATE_FILE), framework="pt") as handle:
        embedded = json.loads(handle.metadata()[INFO_KEY])
    assert load_file(str(folder / STATE_FILE))
    if (folder / INFO_FILE).exists():
        listed = json.loads((folder / INFO_FILE).read_text())["epoch"]
        assert embedded["epoch"] in (listed, listed + 1)
    for extra in folder.glob("*.safetensors"):  # best.safetensors; not a SIGKILL's hidden temporary file
        if not extra.name.startswith("."):
            assert load_file(str(extra)) is not None
    return embedded["epoch"]


@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_to_the_uninterrupted_result(tmp_path):
    from reactkd.cli.main import main

    seed = random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    cohort = tmp_path / "cohort"
    assert main(["synth", "--out", str(cohort / "data"), "--cases", "9", "--seed", "3"]) == 0
    (cohort / "tiny.yaml").write_text(TINY_CONFIG)
    run, reference = tmp_path / "killed", None
    kills = []
    for attempt in range(3):
        if attempt == 1:  # the uninterrupted run, in parallel with the rest (the cohort cache usually exists now)
            reference = subprocess.Popen(_train_command(cohort, tmp_path / "reference"), env=CHILD_ENV,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        child = subprocess.Popen(_train_command(cohort, run, *(["--resume"] if attempt else [])), env=CHILD_ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Progress events before the kill: the first run also emits one per preprocessed case (9), so its
        # kill may land during preprocessing or the cache write; later ones during steps, validation, saving.
        kill_after = rng.randint(1, 12 if attempt == 0 else 6)
        for count, _ in enumerate(child.stdout, start=1):
            if count == kill_after:
                timer = rng.uniform(0.0, 0.6)
                try:
                    child.wait(timeout=timer)  # lands anywhere: mid-step, mid-validation, mid-checkpoint
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGKILL)
                break
        child.wait()
        kills.append((kill_after, child.returncode))
        epoch = _check_checkpoint(run / "checkpoint")
        assert child.returncode in (0, -signal.SIGKILL), (seed, kills)
        kills[-1] += (epoch,)
    assert any(code == -signal.SIGKILL for _, code, _ in kills), (seed, kills)  # else nothing was resumed
    final = subprocess.run(_train_command(cohort, run, "--resume"), env=CHILD_ENV, capture_output=True, text=True)
    assert final.returncode == 0, (seed, kills, final.stderr[-2000:])
    assert reference.wait() == 0, reference.stderr.read()[-2000:]
    verify_package(run)
    assert (run / WEIGHTS_FILE).read_bytes() == (tmp_path / "reference" / WEIGHTS_FILE).read_bytes(), (seed, kills)
