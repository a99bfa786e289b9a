"""Voxel values that must not become a grade (issue 25, classes 2 and 7): NaN/Inf in NIfTI files (ITK's reader
turns them into 0, so they are checked on the raw bytes), CT values no scanner writes inside the liver or
tumour (refused), and a PET that is largely negative across the liver (a warning in the result)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from rel_support import assert_one_error_line, run_cli
from scipy import ndimage

from reactkd.errors import ImageReadError
from reactkd.images.readers import read_image
from reactkd.preprocessing import CT_HU_LIMITS, PreprocessConfig, preprocess_case

GRID = PreprocessConfig(grid=(16, 32, 32))
BAD_VOXELS = ((1, 2, 3), (4, 0, 6), (5, 7, 1))  # (z, y, x), away from any edge of a 6 x 8 x 9 volume


def _edited(case_dir: Path, folder: Path, source: str, name: str, edit) -> Path:
    image = sitk.ReadImage(str(case_dir / f"{source}.nii.gz"))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = sitk.ReadImage(str(case_dir / "mask.nii.gz"))  # on the edited image's grid (PET has its own)
    labels = sitk.GetArrayFromImage(sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor))
    edit(array, labels)
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(folder / name))
    return folder / name


# ------------------------------------------------------------------------------------- class 2: NIfTI NaN/Inf
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "plus-inf", "minus-inf"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_nifti_voxels_are_refused_not_read_as_zero(dtype, suffix, value, tmp_path):
    array = np.random.default_rng(4).normal(40.0, 9.0, (6, 8, 9)).astype(dtype)
    for voxel in BAD_VOXELS:
        array[voxel] = value
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert np.isfinite(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))).all()  # what ITK alone gives
    with pytest.raises(ImageReadError) as caught:
        read_image(path, name="--pet-act")
    assert str(caught.value) == "--pet-act: contains NaN or infinite voxels"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".hdr"])
def test_finite_float_nifti_is_read_unchanged(suffix, tmp_path):
    array = np.random.default_rng(5).normal(-300.0, 400.0, (7, 5, 6))
    array[0, 0, 0] = np.finfo(np.float32).max  # the largest finite value is no infinity
    path = tmp_path / f"fine{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(path)), array.astype(np.float32))


def test_nan_in_a_nifti_pair_and_in_a_later_gzip_member_is_found(tmp_path):
    array = np.full((5, 6, 7), 12.5, np.float32)
    array[4, 5, 6] = np.nan  # the very last voxel
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "pair.hdr"))
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(tmp_path / "pair.hdr")
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "one.nii"))
    raw = (tmp_path / "one.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:701]) + gzip.compress(raw[701:]))
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(tmp_path / "two.nii.gz")


def test_cli_nan_nifti_pet_is_one_error_line(case_dir, tmp_path, capsys):
    pet = _edited(case_dir, tmp_path, "pet_fdg", "fdg.nii", lambda a, labels: a.__setitem__(labels == 2, np.nan))
    code, _, err = run_cli(["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                            "--pet-fdg", str(pet), "--out", str(tmp_path / "out"), "--no-render"], capsys)
    assert assert_one_error_line(code, err) == "error: --pet-fdg: contains NaN or infinite voxels"
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- class 7: CT values
def _set(where: int, value: float):
    def edit(array, labels):
        inside = np.argwhere(labels == where)
        for index in inside[:: max(len(inside) // 5, 1)][:5]:  # a few voxels spread over the region
            array[tuple(index)] = value
    return edit


@pytest.mark.parametrize("where,value", [(2, 7.5e5), (1, -4.0e4), (2, float(np.finfo(np.float32).max))],
                         ids=["tumour-7.5e5", "liver-minus-4e4", "tumour-float32-max"])
def test_impossible_ct_values_in_the_liver_or_tumour_are_refused(where, value, case_dir, tmp_path):
    ct = read_image(_edited(case_dir, tmp_path, "ct", "ct.nii.gz", _set(where, value)))
    mask = read_image(case_dir / "mask.nii.gz", labels=True)
    with pytest.raises(ImageReadError, match=r"CT values inside the liver or tumour reach .* HU, outside") as caught:
        preprocess_case(ct, mask, config=GRID)
    assert f"{value:.4g}" in str(caught.value) and "\n" not in str(caught.value)


def test_extreme_but_possible_ct_values_are_graded(case_dir, tmp_path):
    """Metal on an extended CT scale (2.4e4 HU in the tumour), padding (-3024) and a corrupt value outside the
    organ do not stop a case: only the liver and tumour are judged."""
    def edit(array, labels):
        _set(2, 2.4e4)(array, labels)
        _set(1, -1900.0)(array, labels)
        array[labels == 0] = np.where(np.arange((labels == 0).sum()) % 97 == 0, -3024.0, array[labels == 0])
        rim = ndimage.binary_dilation(labels > 0) & (labels == 0)  # inside the crop box, outside the organ
        array[tuple(np.argwhere(rim)[0])] = 9e30

    ct = read_image(_edited(case_dir, tmp_path, "ct", "metal.nii.gz", edit))
    case = preprocess_case(ct, read_image(case_dir / "mask.nii.gz", labels=True), config=GRID)
    assert case.images.shape[0] == 3 and CT_HU_LIMITS[0] < -3024 and CT_HU_LIMITS[1] > 2.4e4


def test_cli_impossible_ct_value_is_one_error_line(case_dir, tmp_path, capsys):
    ct = _edited(case_dir, tmp_path, "ct", "hot.nii.gz", _set(2, 6.1e8))
    code, _, err = run_cli(["classify", "--ct", str(ct), "--mask", str(case_dir / "mask.nii.gz"),
                            "--out", str(tmp_path / "out"), "--no-render"], capsys)
    assert "reach 6.1e+08 HU" in assert_one_error_line(code, err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- class 7: PET sign
def _negative_share(share: float):
    def edit(array, labels):
        organ = np.flatnonzero(labels.ravel() > 0)
        chosen = organ[np.random.default_rng(6).permutation(len(organ))[: int(share * len(organ))]]
        array.ravel()[chosen] = -np.abs(array.ravel()[chosen]) - 0.3
    return edit


@pytest.mark.parametrize("share,warned", [(0.35, True), (1.0, True), (0.02, False)])
def test_a_largely_negative_pet_is_warned(share, warned, case_dir, tmp_path):
    pet = read_image(_edited(case_dir, tmp_path, "pet_act", "act.nii.gz", _negative_share(share)))
    ct, mask = read_image(case_dir / "ct.nii.gz"), read_image(case_dir / "mask.nii.gz", labels=True)
    case = preprocess_case(ct, mask, pet_act=pet, config=GRID)
    negative = [w for w in case.warnings if "acetate PET is negative in" in w]
    assert bool(negative) == warned, case.warnings
    assert not [w for w in preprocess_case(ct, mask, pet_act=read_image(case_dir / "pet_act.nii.gz"),
                                           config=GRID).warnings if "negative" in w]


def test_cli_negative_pet_is_graded_with_a_warning(case_dir, tiny_package, tmp_path, capsys):
    pet = _edited(case_dir, tmp_path, "pet_fdg", "neg.nii.gz", lambda a, labels: np.negative(a, out=a))
    code, out, err = run_cli(["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                              "--pet-fdg", str(pet), "--model", str(tiny_package), "--out", str(tmp_path / "out"),
                              "--device", "cpu", "--no-render"], capsys)
    assert code == 0, err
    assert any(line.startswith("warning: FDG PET is negative in") for line in out.splitlines()), out
    warnings = json.loads((tmp_path / "out/result.json").read_text())["warnings"]
    assert any("FDG PET is negative in" in w for w in warnings)
