"""Bad-input matrix, command line: every case exits 2 with one `error: ` line on stderr, no traceback and no
output file, partial or not (commands run in-process through reactkd.cli.main.main)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from rel_support import assert_one_error_line, files_under, run_cli

from dicom_series import write_dicom_series
from reactkd.devices import cuda_usable


def _derived(case_dir: Path, folder: Path, name: str, source: str, edit) -> str:
    """Write an edited copy of one of the case's images; `edit(image) -> image`."""
    image = edit(sitk.ReadImage(str(case_dir / f"{source}.nii.gz")))
    sitk.WriteImage(image, str(folder / name))
    return str(folder / name)


def _array_edit(fn):
    def edit(image):
        array = sitk.GetArrayFromImage(image)
        fn(array)
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(image)
        return result
    return edit


def _shift(mm: float):
    def edit(image):
        image.SetOrigin(tuple(o + mm for o in image.GetOrigin()))
        return image
    return edit


def _tumour_outside(array):
    array[array == 2] = 1
    array[1:4, 1:4, 1:4] = 2


def _truncated(case_dir: Path, folder: Path) -> str:
    data = (case_dir / "ct.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return str(folder / "cut.nii.gz")


def _mixed_dicom(case_dir: Path, folder: Path) -> str:
    ct = sitk.ReadImage(str(case_dir / "ct.nii.gz"))[:, :, :3]
    write_dicom_series(ct, folder / "dicom", series_uid="1.2.826.0.1.3680043.2.1125.11")
    write_dicom_series(ct, folder / "other", series_uid="1.2.826.0.1.3680043.2.1125.12")
    for path in (folder / "other").iterdir():
        path.rename(folder / "dicom" / f"b_{path.name}")
    return str(folder / "dicom")


def _huge_header(folder: Path) -> str:
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_SHORT\n"
              "ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n")
    (folder / "huge.mha").write_bytes(header.encode() + b"\0" * 64)
    return str(folder / "huge.mha")


def _manifest(root: Path, folder: Path, edit) -> str:
    """A copy of the valid one-row manifest in `root`, edited by `edit(text) -> text`."""
    text = edit((root / "manifest.csv").read_text())
    (root / f"{folder.name}.csv").write_text(text)
    return str(root / f"{folder.name}.csv")


def _config(folder: Path, text: str) -> str:
    (folder / "config.yaml").write_text(text)
    return str(folder / "config.yaml")


class Ctx:
    """Inputs available to a case: the good case files, the tiny model, the cohort, a scratch input folder."""

    def __init__(self, case_dir: Path, model: Path, cohort: Path, inputs: Path, out: Path):
        self.case, self.model, self.cohort, self.inputs, self.out = case_dir, model, cohort, inputs, out

    def classify(self, ct=None, mask=None, *extra: str, model=None) -> list[str]:
        return ["classify", "--ct", ct or str(self.case / "ct.nii.gz"), "--mask", mask or str(self.case / "mask.nii.gz"),
                "--model", str(model or self.model), "--out", str(self.out / "result"), "--device", "cpu",
                "--no-render", *extra]

    def file(self, name: str, data: bytes) -> str:
        (self.inputs / name).write_bytes(data)
        return str(self.inputs / name)

    def derived(self, name, source, edit) -> str:
        return _derived(self.case, self.inputs, name, source, edit)

    def ldct(self, dose: str, out: str = "low.nii.gz") -> list[str]:
        return ["simulate-ldct", "--ct", str(self.case / "ct.nii.gz"), "--dose", dose, "--out", str(self.out / out)]

    def train(self, *extra: str, manifest: str | None = None) -> list[str]:
        return ["train", "--stage", "teacher-dose", "--manifest", manifest or str(self.cohort / "manifest.csv"),
                "--out", str(self.out / "model"), "--device", "cpu", "--progress", "none", *extra]

    def evaluate(self, *extra: str) -> list[str]:
        return ["evaluate", "--manifest", str(self.cohort / "manifest.csv"), "--model", str(self.model),
                "--out", str(self.out / "eval"), "--device", "cpu", "--progress", "none", *extra]


# id -> (build(ctx) -> argv, pattern expected in the error line)
CLI_CASES = {
    "classify-zero-byte-ct": (lambda c: c.classify(ct=c.file("e.nii.gz", b"")), "--ct: file is empty"),
    "classify-missing-ct": (lambda c: c.classify(ct=str(c.inputs / "absent.nii.gz")), "--ct: file not found"),
    "classify-truncated-ct": (lambda c: c.classify(ct=_truncated(c.case, c.inputs)), "--ct: file is truncated"),
    "classify-nan-ct": (lambda c: c.classify(ct=c.derived("nan.nrrd", "ct", _array_edit(
        lambda a: a.__setitem__((5, 5, 5), np.nan)))), "--ct: contains NaN"),
    "classify-2d-mask": (lambda c: c.classify(mask=c.derived("m2d.nrrd", "mask", lambda im: im[:, :, 10])),
                         "--mask: expected a 3D image, got 2D"),
    "classify-gigantic-ct-header": (lambda c: c.classify(ct=_huge_header(c.inputs)), "too large"),
    "classify-mixed-dicom-series": (lambda c: c.classify(ct=_mixed_dicom(c.case, c.inputs)), "--ct: folder holds 2 DICOM series"),
    "classify-mask-geometry-mismatch": (lambda c: c.classify(mask=c.derived("m.nrrd", "mask", _shift(5.0))),
                                        "mask geometry"),
    "classify-empty-mask": (lambda c: c.classify(mask=c.derived("m.nrrd", "mask", _array_edit(lambda a: a.fill(0)))),
                            "no liver"),
    "classify-tumour-outside-liver": (lambda c: c.classify(mask=c.derived("m.nrrd", "mask", _array_edit(
        _tumour_outside))), "outside the liver"),
    "classify-label-out-of-range": (lambda c: c.classify(mask=c.derived("m.nrrd", "mask", _array_edit(
        lambda a: a.__setitem__((0, 0, 0), 7)))), "mask values must be 0"),
    "classify-pet-not-overlapping": (lambda c: c.classify(None, None, "--pet-fdg", c.derived(
        "pet.nii.gz", "pet_fdg", _shift(900.0))), "FDG PET does not overlap"),
    "classify-liver-without-tumor": (lambda c: ["classify", "--ct", str(c.case / "ct.nii.gz"), "--liver",
                                                str(c.case / "mask.nii.gz"), "--model", str(c.model), "--out",
                                                str(c.out / "r"), "--device", "cpu"], "--liver needs --tumor"),
    "classify-liver-tumor-different-grids": (lambda c: ["classify", "--ct", str(c.case / "ct.nii.gz"), "--liver",
                                                        str(c.case / "mask.nii.gz"), "--tumor",
                                                        c.derived("t.nrrd", "mask", _shift(3.0)), "--model",
                                                        str(c.model), "--out", str(c.out / "r"), "--device", "cpu"],
                                             "different grids"),
    "classify-missing-model": (lambda c: c.classify(model=c.inputs / "nothing"), "model package folder not found"),
    "classify-unknown-device": (lambda c: c.classify(None, None, "--device", "tpu"), "invalid choice: 'tpu'"),
    "classify-mask-and-liver": (lambda c: c.classify(None, None, "--liver", str(c.case / "mask.nii.gz")),
                                "not allowed with argument"),
    "simulate-ldct-dose-0": (lambda c: c.ldct("0"), "--dose must be a fraction"),
    "simulate-ldct-dose-2": (lambda c: c.ldct("2"), "--dose must be a fraction"),
    "simulate-ldct-dose-nan": (lambda c: c.ldct("nan"), "--dose must be a fraction"),
    "simulate-ldct-dose-text": (lambda c: c.ldct("half"), "invalid float value: 'half'"),
    "simulate-ldct-output-format": (lambda c: c.ldct("0.5", out="low.png"), "unsupported output format"),
    "evaluate-unknown-modality-subset": (lambda c: c.evaluate("--modalities", "ct,mri"),
                                         "unknown modality subset.*mri"),
    "evaluate-dose-out-of-range": (lambda c: c.evaluate("--doses", "1,0"), "doses must be fractions"),
    "evaluate-fold-without-training-record": (lambda c: c.evaluate("--fold", "0"), "has no training record"),
    "train-fold-out-of-range": (lambda c: c.train("--fold", "3", "--folds", "3"), r"--fold must lie in \[0, 2\]"),
    "train-fold-negative": (lambda c: c.train("--fold", "-1"), r"--fold must lie in"),
    "train-one-fold": (lambda c: c.train("--folds", "1"), "--folds must be at least 2"),
    "train-config-unknown-key": (lambda c: c.train("--config", _config(c.inputs, "epoch: 3\n")),
                                 "unknown config key.*epoch"),
    "train-config-wrong-type": (lambda c: c.train("--config", _config(c.inputs, "batch_size: four\n")),
                                "'batch_size' must be of type int"),
    "train-manifest-duplicate-ids": (lambda c: c.train(manifest=_manifest(c.cohort, c.inputs, lambda t: t + t.splitlines()[1] + "\n")),
                                     "duplicate case_id 'c0'"),
    "train-manifest-dotdot-path": (lambda c: c.train(manifest=_manifest(c.cohort, c.inputs, lambda t: t.replace(
        "case0/mask.nii.gz", "../../../etc/hostname"))), "outside the cohort folder"),
    "train-manifest-missing-columns": (lambda c: c.train(manifest=_manifest(c.cohort, c.inputs, lambda t: t.replace(
        "pet_act,", "").replace("case0/pet_act.nii.gz,", ""))), "missing column.*pet_act"),
    "train-unknown-stage": (lambda c: ["train", "--stage", "teacher", "--manifest", "m.csv", "--out", "o"],
                            "invalid choice: 'teacher'"),
    "synth-zero-cases": (lambda c: ["synth", "--out", str(c.out / "cohort"), "--cases", "0"],
                         "expected a positive integer"),
    "synth-out-is-a-file": (lambda c: ["synth", "--out", c.file("file.txt", b"x"), "--cases", "1"],
                            "exists and is not a folder"),
    "synth-unknown-world": (lambda c: ["synth", "--out", str(c.out / "cohort"), "--world", "v3"],
                            "argument --world: invalid choice: 'v3'"),
    "synth-unknown-size": (lambda c: ["synth", "--out", str(c.out / "cohort"), "--size", "huge"],
                           "argument --size: invalid choice: 'huge'"),
    "evaluate-empty-doses": (lambda c: c.evaluate("--doses", ","), "doses must be fractions"),
    "no-command": (lambda c: [], "the following arguments are required: command"),
}


@pytest.mark.parametrize("case_id", list(CLI_CASES))
def test_cli_refuses_with_one_error_line_and_no_output(case_id, case_dir, tiny_package, manifest_dir, tmp_path,
                                                       capsys):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    build, pattern = CLI_CASES[case_id]
    argv = build(Ctx(case_dir, tiny_package, manifest_dir, inputs, out))
    cohort_before = files_under(manifest_dir)
    code, _, err = run_cli(argv, capsys)
    line = assert_one_error_line(code, err)
    assert re.search(pattern, line), line
    assert files_under(out) == set(), files_under(out)
    assert files_under(manifest_dir) - cohort_before <= {f"{inputs.name}.csv"}  # no cache left behind


@pytest.mark.skipif(cuda_usable(), reason="needs a machine without a usable CUDA device")
@pytest.mark.parametrize("command", ["classify", "train", "evaluate"])
def test_cli_cuda_requested_without_cuda(command, case_dir, tiny_package, manifest_dir, tmp_path, capsys):
    ctx = Ctx(case_dir, tiny_package, manifest_dir, tmp_path, tmp_path / "out")
    argv = {"classify": ctx.classify, "train": ctx.train, "evaluate": ctx.evaluate}[command]()
    argv[argv.index("--device") + 1] = "cuda"
    code, _, err = run_cli(argv, capsys)
    assert "no usable CUDA device" in assert_one_error_line(code, err)
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == set()


def test_cli_ct_not_in_hounsfield_units_warns_and_still_classifies(case_dir, tiny_package, tmp_path, capsys):
    scaled = _derived(case_dir, tmp_path, "scaled.nii.gz", "ct", lambda im: sitk.Cast(im, sitk.sitkFloat32) / 1000.0)
    ctx = Ctx(case_dir, tiny_package, case_dir, tmp_path, tmp_path)
    code, out, err = run_cli(ctx.classify(ct=scaled), capsys)
    assert code == 0, err
    assert any(line.startswith("warning: CT values") for line in out.splitlines())
    result = json.loads((tmp_path / "result" / "result.json").read_text())
    assert any("Hounsfield" in w for w in result["warnings"])


def test_cli_refusal_leaves_an_earlier_result_untouched(case_dir, tiny_package, tmp_path, capsys):
    """A failed run into an existing output folder keeps the earlier, complete result."""
    ctx = Ctx(case_dir, tiny_package, case_dir, tmp_path, tmp_path)
    assert run_cli(ctx.classify(), capsys)[0] == 0
    before = {name: (tmp_path / "result" / name).read_bytes() for name in files_under(tmp_path / "result")}
    empty = _derived(case_dir, tmp_path, "empty.nrrd", "mask", _array_edit(lambda a: a.fill(0)))
    code, _, err = run_cli(ctx.classify(mask=empty), capsys)
    assert_one_error_line(code, err)
    assert {name: (tmp_path / "result" / name).read_bytes() for name in files_under(tmp_path / "result")} == before
    shutil.rmtree(tmp_path / "result")


def test_real_process_stderr_is_exactly_one_line(tmp_path):
    """In a real process native libraries write to stderr too (ITK/GDCM warnings); the contract still holds."""
    import subprocess
    import sys

    from rel_support import CHILD_ENV

    (tmp_path / "no_dicom").mkdir()
    (tmp_path / "no_dicom" / "notes.txt").write_text("not DICOM")
    commands = [["simulate-ldct", "--ct", str(tmp_path / "no_dicom"), "--dose", "0.5", "--out", str(tmp_path / "o.nrrd")],
                ["classify", "--ct", "ct.nii.gz", "--mask", "m.nii.gz", "--out", str(tmp_path / "r"), "--device", "tpu"]]
    for argv in commands:
        result = subprocess.run([sys.executable, "-m", "reactkd", *argv], capture_output=True, text=True,
                                env=CHILD_ENV, timeout=300)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: ") and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_dicom"]
