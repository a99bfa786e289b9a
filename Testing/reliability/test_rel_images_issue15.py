"""Images (issue 15, class 10): a DICOM series with a missing, duplicated or corrupted slice is refused with a
message naming the slices; a 4D header with one time point gets the same size cap as a 3D one (before reading
any data); a direction matrix that is not orthonormal is refused even when its determinant is 1; an 8-bit CT
is flagged instead of passing as Hounsfield units."""

from __future__ import annotations

import math
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series import write_dicom_series
from reactkd.errors import GeometryError, ImageReadError
from reactkd.images.readers import read_image
from reactkd.preprocessing import PreprocessConfig, preprocess_case
from synthetic_images import make_case


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "ct"
    ct, _, _ = make_case(shape_zyx=(12, 32, 32), tumour_centre_zyx=(6, 16, 16), tumour_radius=3)
    write_dicom_series(ct, folder)
    return folder


def damaged(series, tmp_path, how):
    folder = tmp_path / how
    shutil.copytree(series, folder)
    files = sorted(folder.iterdir())
    middle = files[len(files) // 2]
    if how == "missing":
        middle.unlink()
    elif how == "duplicated":
        shutil.copy(middle, folder / "zz_copy.dcm")
    else:  # corrupted: the header of one slice overwritten
        data = bytearray(middle.read_bytes())
        data[128:700] = b"\x00" * 572
        middle.write_bytes(bytes(data))
    return folder


def test_an_intact_series_reads(series):
    assert read_image(series).GetSize() == (32, 32, 12)


@pytest.mark.parametrize("how, pattern", [("missing", "a missing slice or an irregular gap between"),
                                          ("duplicated", "a duplicated slice between|holds 2 DICOM series"),
                                          ("corrupted", "missing slice|unreadable|lacks its position")])
def test_a_damaged_series_is_refused_naming_the_slices(how, pattern, series, tmp_path):
    with pytest.raises(ImageReadError, match=pattern) as info:
        read_image(damaged(series, tmp_path, how), name="--ct")
    assert "\n" not in str(info.value)


def test_a_4d_header_with_one_time_point_is_size_capped_before_reading(tmp_path):
    """A NIfTI header claiming 5000 x 5000 x 5000 x 1 over a sparse file: refused from the header alone."""
    path = tmp_path / "huge4d.nii"
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 4, 5000, 5000, 5000, 1, 1, 1, 1)
    struct.pack_into("<h", header, 70, 2)  # uint8
    struct.pack_into("<h", header, 72, 8)
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352)
    header[344:348] = b"n+1\x00"
    with open(path, "wb") as handle:
        handle.write(bytes(header) + b"\x00" * 4)
        handle.truncate(352 + 5000 ** 3)  # sparse: nothing on disk
    with pytest.raises(GeometryError, match="too large"):
        read_image(path)


def test_a_sheared_direction_with_determinant_one_is_refused(tmp_path):
    ct, _, _ = make_case(shape_zyx=(8, 16, 16), tumour_centre_zyx=(4, 8, 8), tumour_radius=2)
    shear = (1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # det = 1, columns not perpendicular
    assert math.isclose(np.linalg.det(np.reshape(shear, (3, 3))), 1.0)
    ct.SetDirection(shear)
    path = tmp_path / "sheared.nrrd"
    sitk.WriteImage(ct, str(path))
    with pytest.raises(GeometryError, match="not orthonormal"):
        read_image(path)


def test_an_8_bit_ct_is_flagged():
    ct, mask, _ = make_case()
    clipped = sitk.Cast(sitk.Clamp(sitk.Round(ct + 60), sitk.sitkFloat32, 0, 255), sitk.sitkUInt8)  # 8-bit export
    case = preprocess_case(clipped, mask, config=PreprocessConfig(grid=(16, 32, 32)))
    assert any("8-bit image" in warning for warning in case.warnings)
    assert not any("8-bit" in w for w in preprocess_case(ct, mask, config=PreprocessConfig(grid=(16, 32, 32))).warnings)


# ------------------------------------------------------------------ quiet acceptance (issue 15, class 12)
def test_a_pet_without_uptake_or_covering_part_of_the_liver_is_warned_about():
    ct, mask, pet = make_case()
    config = PreprocessConfig(grid=(16, 32, 32))
    assert not preprocess_case(ct, mask, pet, config=config).warnings
    flat = preprocess_case(ct, mask, pet * 0, config=config).warnings
    assert any("FDG PET is constant (0)" in w for w in flat)
    size = list(pet.GetSize())
    half = sitk.RegionOfInterest(pet, [size[0] * 5 // 8, size[1], size[2]], [0, 0, 0])
    partial = preprocess_case(ct, mask, half, config=config).warnings
    assert any(w.startswith("FDG PET covers only") and "of the liver region" in w for w in partial), partial


def test_messages_speak_of_what_the_user_gave(tmp_path, capsys):
    from reactkd.cli.main import main
    from reactkd.errors import ConfigError
    from reactkd.images.writers import write_image
    from reactkd.training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("doses: [1.0e-300]\n")
    with pytest.raises(ConfigError, match=r"doses must be fractions of the full dose in \[0.001, 1\], got \[1e-300\]"):
        load_config(path)
    tiny = sitk.Image([2, 2, 2], sitk.sitkFloat32)
    write_image(tiny, tmp_path / "tiny.nii.gz")
    assert main(["simulate-ldct", "--ct", str(tmp_path / "tiny.nii.gz"), "--dose", "0.5", "--out",
                 str(tmp_path / "low.nii.gz")]) == 2
    assert "this CT's slices are 2 x 2" in capsys.readouterr().err
