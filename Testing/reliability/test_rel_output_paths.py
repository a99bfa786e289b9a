"""Output locations (issue 15, classes 2 and 8): no command overwrites one of its inputs, whatever path
spelling reaches it (relative, symlink), and an output location that cannot be written is refused with one
`error:` line before any heavy work (the model named here does not even exist, so reaching it would say so)."""

from __future__ import annotations

import os
import shutil

import pytest

from reactkd.cli.main import main
from reactkd.images.writers import write_image
from synthetic_images import make_case


@pytest.fixture
def files(tmp_path):
    ct, mask, _ = make_case(shape_zyx=(12, 24, 24), tumour_centre_zyx=(6, 12, 14), tumour_radius=3)
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(mask, tmp_path / "mask.nii.gz")
    return tmp_path


def run(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_simulate_ldct_never_overwrites_its_ct(files, capsys, monkeypatch):
    before = (files / "ct.nii.gz").read_bytes()
    (files / "link.nii.gz").symlink_to(files / "ct.nii.gz")
    monkeypatch.chdir(files)
    for out in (files / "ct.nii.gz", "ct.nii.gz", "./sub/../ct.nii.gz", files / "link.nii.gz"):
        (files / "sub").mkdir(exist_ok=True)
        assert "would overwrite the input" in run(["simulate-ldct", "--ct", files / "ct.nii.gz", "--dose", "0.5",
                                                   "--out", out], capsys)
    assert (files / "ct.nii.gz").read_bytes() == before


def test_classify_refuses_an_output_folder_whose_outputs_are_its_inputs(files, capsys):
    shutil.copy(files / "ct.nii.gz", files / "attention_cbam.nrrd")  # an input named like an output
    err = run(["classify", "--ct", files / "attention_cbam.nrrd", "--mask", files / "mask.nii.gz",
               "--model", files / "no-such-model", "--out", files], capsys)
    assert "would overwrite the input" in err
    dicom = files / "dicom"
    dicom.mkdir()
    assert "is the input" in run(["classify", "--ct", dicom, "--mask", files / "mask.nii.gz", "--out", dicom], capsys)


def test_training_never_writes_into_a_teacher(files, capsys):
    teacher = files / "teacher"
    teacher.mkdir()
    err = run(["train", "--stage", "student", "--manifest", files / "m.csv", "--out", teacher,
               "--teacher-sf", teacher], capsys)
    assert "is the input" in err


@pytest.mark.parametrize("case", ["out-is-a-file", "parent-is-a-file", "under-proc", "name-too-long",
                                  "read-only-parent"])
def test_unwritable_output_locations_are_refused_before_any_work(case, files, capsys):
    if case == "read-only-parent" and os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    (files / "plain.txt").write_text("x")
    locked = files / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    out = {"out-is-a-file": files / "plain.txt", "parent-is-a-file": files / "plain.txt" / "out",
           "under-proc": "/proc/self/out", "name-too-long": files / ("x" * 300),
           "read-only-parent": locked / "out"}[case]
    expected = {"out-is-a-file": "exists and is not a folder", "parent-is-a-file": "is a file, so nothing",
                "under-proc": "refusing to write under /proc", "name-too-long": "longer than 255 bytes",
                "read-only-parent": "no permission"}[case]
    for args in (["classify", "--ct", files / "ct.nii.gz", "--mask", files / "mask.nii.gz",
                  "--model", files / "no-such-model", "--out", out],
                 ["evaluate", "--manifest", files / "m.csv", "--model", files / "no-such-model", "--out", out]):
        assert expected in run(args, capsys)
    if case != "out-is-a-file":
        assert expected in run(["simulate-ldct", "--ct", files / "ct.nii.gz", "--dose", "0.5", "--out",
                                out if case != "under-proc" else "/proc/self/x.nii.gz"], capsys)
    locked.chmod(0o700)
