"""Issue 25, classes 10 and 11: a classification or training that cannot fit in memory is refused before it
starts, in one line naming what it needs, what the machine has and the fix; training reports from its first
second."""

import os
import subprocess
import sys

import pytest
from rel_support import assert_one_error_line, files_under, run_cli

from reactkd import memory


def _classify(case_dir, package, out, *extra):
    return ["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"), "--model",
            str(package), "--out", str(out), "--device", "cpu", *extra]


def test_classify_too_large_for_the_memory_is_refused_before_any_output(tiny_package, case_dir, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 200 * 1024 ** 2)
    monkeypatch.setattr(memory, "CLASSIFY_BYTES_PER_VOXEL", 10 ** 6)
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(case_dir, tiny_package, out, "--no-render"), capsys)
    line = assert_one_error_line(code, err)
    assert "classifying a CT of" in line and "GiB of memory, but this machine has 0.2 GiB available" in line
    assert "crop or resample" in line
    assert not out.exists() or files_under(out) == set()


def test_rendering_too_large_is_refused_before_the_staging_folder(tiny_package, case_dir, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(memory, "RENDER_BYTES_PER_VOXEL", 10 ** 7)
    out = tmp_path / "out"
    code, _, err = run_cli(_classify(case_dir, tiny_package, out), capsys)
    assert "rendering a CT of" in assert_one_error_line(code, err) and "--no-render" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_the_memory_check_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("REACTKD_MEMORY_CHECK", "0")
    memory.check_memory(1 << 62, "anything", "nothing")


def test_training_estimate_grows_with_grid_batch_and_width():
    small_host, small = memory.training_peak_bytes("teacher-sf", {"feature_size": 12, "depths": [1, 1, 1, 1]},
                                                   (32, 32, 32), 2, 10)
    _, wider = memory.training_peak_bytes("teacher-sf", {"feature_size": 36}, (32, 32, 32), 2, 10)
    big_host, bigger = memory.training_peak_bytes("teacher-sf", {"feature_size": 12, "depths": [1, 1, 1, 1]},
                                                  (32, 64, 64), 6, 30)
    assert small < wider and small * 12 == pytest.approx(bigger, rel=1e-6) and small_host < big_host
    _, student = memory.training_peak_bytes("student", {}, (32, 32, 32), 2, 10)
    assert student < small
    # the dose teacher also holds each case's CT channel at every training dose
    plain, _ = memory.training_peak_bytes("teacher-dose", {}, (32, 32, 32), 2, 10)
    with_doses, _ = memory.training_peak_bytes("teacher-dose", {}, (32, 32, 32), 2, 10, n_doses=4)
    assert with_doses - plain == 8 * 4 * 32 ** 3 * 10


def test_the_default_config_on_a_cpu_is_refused_with_what_it_needs_and_the_fix(monkeypatch):
    import torch

    from reactkd.cli.train import check_training_memory
    from reactkd.training.config import TrainConfig

    monkeypatch.setattr(memory, "available_bytes", lambda: 11 * 1024 ** 3)
    lines = []
    with pytest.raises(memory.ReactKDError) as error:
        check_training_memory("teacher-sf", TrainConfig(), (64, 128, 128), 18, torch.device("cpu"),
                              lambda text, final=False: lines.append(text))
    message = str(error.value)
    assert "training teacher-sf on the CPU" in message and "11.0 GiB available" in message
    assert "demo.yaml" in message and "--device cuda" in message and "\n" not in message
    tiny = TrainConfig(batch_size=2, teacher={"feature_size": 12, "depths": [1, 1, 1, 1]})
    check_training_memory("teacher-sf", tiny, (32, 32, 32), 18, torch.device("cpu"),
                          lambda text, final=False: lines.append(text))
    assert lines and lines[0].startswith("estimated peak memory:")


@pytest.mark.parametrize("mode, shown", [("auto", True), ("tqdm", True), ("none", False), ("json", False)])
def test_training_status_lines_from_the_first_second(capsys, mode, shown):
    from reactkd.cli.train import _status_printer

    status = _status_printer(mode, enabled=True)
    for done in range(1, 5):
        status(f"preparing the cohort cache: {done}/4", final=done == 4)
    err = capsys.readouterr().err.splitlines()
    assert (err[:1] == ["preparing the cohort cache: 1/4"] and err[-1] == "preparing the cohort cache: 4/4") == shown
    assert bool(err) == shown


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_classify_peak_memory_stays_under_the_estimate(tmp_path):
    """Measured peak (VmHWM of a real `reactkd classify` process, shipped student, no rendering) of a
    224 x 224 x 96 CT: under the estimate, and not absurdly far below it."""
    import numpy as np
    import SimpleITK as sitk

    from reactkd.images.writers import write_image

    nz, ny, nx = 96, 224, 224
    z, y, x = np.ogrid[:nz, :ny, :nx]
    labels = (((z - 48) / 30) ** 2 + ((y - 112) / 60) ** 2 + ((x - 112) / 60) ** 2 <= 1).astype(np.uint8)
    labels[((z - 48) / 8) ** 2 + ((y - 112) / 12) ** 2 + ((x - 112) / 12) ** 2 <= 1] = 2
    ct = sitk.GetImageFromArray(np.where(labels > 0, 60.0 + 30 * (labels == 2), -40.0).astype(np.int16))
    ct.SetSpacing((1.4, 1.4, 2.0))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(ct)
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(mask, tmp_path / "mask.nii.gz")
    code = (f"import sys; from reactkd.cli.main import main; code = main(['classify', '--ct', "
            f"{str(tmp_path / 'ct.nii.gz')!r}, '--mask', {str(tmp_path / 'mask.nii.gz')!r}, '--out', "
            f"{str(tmp_path / 'out')!r}, '--device', 'cpu', '--no-render']); "
            # VmHWM, not getrusage: Linux carries ru_maxrss across execve, so a child forked from a large pytest
            # process would report the parent's peak.
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
            "print(int(hwm.split()[1]) * 1024); sys.exit(code)")
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    peak, estimate = int(done.stdout.split()[-1]), memory.classify_peak_bytes(nx * ny * nz)
    assert 0.6 * estimate <= peak <= estimate, (peak, estimate)


def test_where_free_memory_cannot_be_told_nothing_is_refused(monkeypatch):
    """No /proc and no psutil (Slicer's Python on macOS or Windows may lack it): the check is skipped, never a
    crash and never a guess."""
    import builtins

    real_open, real_import = builtins.open, builtins.__import__
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (_ for _ in ()).throw(OSError("no /proc"))
                        if str(path).startswith(("/proc", "/sys")) else real_open(path, *a, **k))
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "psutil" else real_import(name, *a, **k))
    assert memory.available_bytes() is None and memory.resident_bytes() == 0
    memory.check_memory(1 << 60, "a step", "nothing")  # no refusal without a figure to compare with
