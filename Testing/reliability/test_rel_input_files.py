"""Every file an image read opens follows one rule (issue 25, class 3): regular files only, and a detached
header's data files (NRRD `data file:`, MetaImage `ElementDataFile`: a name, a LIST, a format string) beside
or below the header. Checked for every read (read_image) and for manifest cells (resolve_cell)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from rel_support import assert_one_error_line, run_cli

from dicom_series import write_dicom_series
from reactkd.cohort.manifest import read_grading_manifest, read_manifest
from reactkd.errors import ImageReadError, ManifestError
from reactkd.images.image_files import image_files
from reactkd.images.readers import read_image

VOXELS = np.arange(5 * 3 * 2, dtype=np.float32).reshape(2, 3, 5)  # (z, y, x): two slices of 3 x 5
NRRD = "NRRD0004\ntype: float\ndimension: 3\nsizes: 5 3 2\nspacings: 1 1 2\nencoding: raw\nendian: little\n"
META = "ObjectType = Image\nNDims = 3\nDimSize = 5 3 2\nElementType = MET_FLOAT\nElementSpacing = 1 1 2\n"


def _slices(folder: Path, prefix: str = "part") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for index, plane in enumerate(VOXELS):
        (folder / f"{prefix}{index}.bin").write_bytes(plane.tobytes())
    return [f"{prefix}{index}.bin" for index in range(len(VOXELS))]


def _header(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def _data_field(kind: str, value: str) -> str:
    return NRRD + f"data file: {value}\n" if kind == "nrrd" else META + f"ElementDataFile = {value}\n"


# ------------------------------------------------------------------------------ data files outside the header
OUTSIDE = {  # case -> (header kind, its data file field; {abs} is the outside folder)
    "nrrd-dotdot": ("nrrd", "../elsewhere/whole.bin"),
    "nrrd-absolute": ("nrrd", "{abs}/whole.bin"),
    "nrrd-list-one-outside": ("nrrd", "LIST\npart0.bin\n../elsewhere/part1.bin"),
    "nrrd-format-outside": ("nrrd", "../elsewhere/part%d.bin 0 1 1"),
    "mha-dotdot": ("mha", "../elsewhere/whole.bin"),
    "mha-absolute": ("mha", "{abs}/whole.bin"),
    "mha-list-one-outside": ("mha", "LIST\n../elsewhere/part0.bin\npart1.bin"),
}


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_a_data_file_outside_the_header_folder_is_refused(case, tmp_path):
    kind, field = OUTSIDE[case]
    elsewhere = tmp_path / "elsewhere"
    _slices(elsewhere)
    _slices(tmp_path / "scan")  # the in-folder slices a LIST also names
    (elsewhere / "whole.bin").write_bytes(VOXELS.tobytes())
    value = field.replace("{abs}", str(elsewhere))
    header = _header(tmp_path / "scan", "ct.nhdr" if kind == "nrrd" else "ct.mhd", _data_field(kind, value))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(header))).shape == VOXELS.shape  # ITK alone reads it
    with pytest.raises(ImageReadError, match="lies outside the header's folder") as caught:
        read_image(header, name="--ct")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--ct: data file ")


def test_a_data_file_symlinked_out_of_the_folder_is_refused_and_one_inside_is_read(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store/blob.bin").write_bytes(VOXELS.tobytes())
    scan = tmp_path / "scan"
    scan.mkdir()
    (scan / "link.bin").symlink_to(tmp_path / "store/blob.bin")
    with pytest.raises(ImageReadError, match="lies outside"):
        read_image(_header(scan, "out.nhdr", _data_field("nrrd", "link.bin")))
    (scan / "deep").mkdir()
    (scan / "deep/blob.bin").write_bytes(VOXELS.tobytes())
    (scan / "inner.bin").symlink_to(scan / "deep/blob.bin")
    for header in (_header(scan, "in.nhdr", _data_field("nrrd", "inner.bin")),
                   _header(scan, "below.mhd", _data_field("mha", "deep/blob.bin"))):
        assert np.array_equal(sitk.GetArrayViewFromImage(read_image(header)), VOXELS)


@pytest.mark.parametrize("kind,field", [("nrrd", "LIST\n{0}\n{1}"), ("nrrd", "slab%d.bin 0 1 1"),
                                        ("mha", "LIST\n{0}\n{1}"), ("mha", "slab%d.bin 0 1 1")])
def test_detached_headers_with_lists_and_patterns_are_still_read(kind, field, tmp_path):
    names = _slices(tmp_path, "slab")
    header = _header(tmp_path, "img.nhdr" if kind == "nrrd" else "img.mhd", _data_field(kind, field.format(*names)))
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(header)), VOXELS)
    assert image_files(header) == [header, *(tmp_path / n for n in names)]


def test_a_missing_data_file_is_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"data file 'gone.bin' not found"):
        read_image(_header(tmp_path, "ct.nhdr", _data_field("nrrd", "gone.bin")))


# -------------------------------------------------------------------------------------------- manifests
def _cohort(tmp_path: Path, ct_cell: str, case_dir: Path) -> Path:
    root = tmp_path / "cohort"
    (root / "c1").mkdir(parents=True)
    (root / "c1/mask.nii.gz").write_bytes((case_dir / "mask.nii.gz").read_bytes())
    (root / "manifest.csv").write_text("case_id,patient_id,label,ct,pet_fdg,pet_act,mask\n"
                                       f"k1,q1,moderate,{ct_cell},,,c1/mask.nii.gz\n")
    return root / "manifest.csv"


def test_a_cohort_header_whose_data_file_leaves_the_cohort_is_refused(case_dir, tmp_path):
    manifest = _cohort(tmp_path, "c1/scan.nhdr", case_dir)
    (tmp_path / "leak.bin").write_bytes(VOXELS.tobytes())
    _header(manifest.parent / "c1", "scan.nhdr", _data_field("nrrd", "../../leak.bin"))
    with pytest.raises(ManifestError, match=r"line 2 \(ct\): c1/scan.nhdr: data file '../../leak.bin' lies outside"):
        read_manifest(manifest)
    # a grading manifest may name images anywhere, but their data files still lie beside their headers
    grading = tmp_path / "grading.csv"
    grading.write_text(f"case_id,ct,mask\nk1,{manifest.parent}/c1/scan.nhdr,{case_dir}/mask.nii.gz\n")
    (case,) = read_grading_manifest(grading)
    assert "lies outside" in case.problem and case.paths["ct"] is None


# ----------------------------------------------------------------------------------------- special files
def _without_hanging(call, fifo: Path):
    """Run `call` in a thread; if it blocks on `fifo`, release it (open the writing end) and fail."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"reading hung on the FIFO {fifo}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("where", ["image", "data-file", "dicom-folder-entry"])
def test_a_fifo_is_refused_before_it_is_opened(where, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    fifo = folder / ("pipe.nii.gz" if where == "image" else "pipe.bin")
    os.mkfifo(fifo)
    target = fifo
    if where == "data-file":
        target = _header(folder, "ct.nhdr", _data_field("nrrd", "pipe.bin"))
    elif where == "dicom-folder-entry":
        write_dicom_series(sitk.GetImageFromArray(np.zeros((4, 6, 6), np.float32)), folder)
        target = folder
    with pytest.raises(ImageReadError, match="is a FIFO, not a regular file"):
        _without_hanging(lambda: read_image(target, name="--ct"), fifo)


def test_a_device_as_image_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="--pet-fdg: is a character device, not a regular file"):
        read_image("/dev/zero", name="--pet-fdg")


def test_a_fifo_as_manifest_or_manifest_cell_is_refused(case_dir, tmp_path):
    manifest = _cohort(tmp_path, "c1/ct.nrrd", case_dir)
    os.mkfifo(manifest.parent / "c1/ct.nrrd")
    with pytest.raises(ManifestError, match=r"\(ct\): c1/ct.nrrd: is a FIFO"):
        _without_hanging(lambda: read_manifest(manifest), manifest.parent / "c1/ct.nrrd")
    grading = tmp_path / "grading.csv"
    os.mkfifo(grading)
    with pytest.raises(ManifestError, match="grading.csv: the manifest is a FIFO, not a regular file"):
        _without_hanging(lambda: read_grading_manifest(grading), grading)


def test_cli_classify_with_a_fifo_ct_prints_one_error_line(case_dir, tmp_path, capsys):
    fifo = tmp_path / "stream.nii.gz"
    os.mkfifo(fifo)
    argv = ["classify", "--ct", str(fifo), "--mask", str(case_dir / "mask.nii.gz"), "--out", str(tmp_path / "out"),
            "--no-render"]
    code, _, err = _without_hanging(lambda: run_cli(argv, capsys), fifo)
    assert assert_one_error_line(code, err) == "error: --ct: is a FIFO, not a regular file"
    assert not (tmp_path / "out").exists()
