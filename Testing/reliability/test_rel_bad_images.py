"""Bad-input matrix, library side: images (read_image) and image combinations (preprocess_case).

Each case builds one bad input and asserts the specific exception type and a one-line message.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series import write_dicom_series
from reactkd.errors import GeometryError, ImageReadError, MaskError
from reactkd.images.readers import read_image
from reactkd.preprocessing import PreprocessConfig, preprocess_case

RAW_4 = np.zeros((4, 4, 4), np.float32).tobytes()
GRID = PreprocessConfig(grid=(16, 32, 32))


def nrrd_bytes(sizes: str = "4 4 4", spacings: str = "1 1 1", data: bytes = RAW_4) -> bytes:
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {sizes}\nspacings: {spacings}\n"
              "encoding: raw\nendian: little\n\n")
    return header.encode() + data


def mha_bytes(sizes: str = "4 4 4", spacing: str = "1 1 1", data: bytes = RAW_4) -> bytes:
    header = (f"ObjectType = Image\nNDims = 3\nDimSize = {sizes}\nElementType = MET_FLOAT\n"
              f"ElementSpacing = {spacing}\nElementDataFile = LOCAL\n")
    return header.encode() + data


def ct_image(case_dir: Path) -> sitk.Image:
    return sitk.ReadImage(str(case_dir / "ct.nii.gz"))


def _write(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


def _image_with(case_dir: Path, folder: Path, name: str, edit) -> Path:
    array = sitk.GetArrayFromImage(ct_image(case_dir))
    edit(array)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct_image(case_dir))
    sitk.WriteImage(image, str(folder / name))
    return folder / name


def _truncated(case_dir: Path, folder: Path, suffix: str, compress: bool) -> Path:
    sitk.WriteImage(ct_image(case_dir), str(folder / f"full{suffix}"), useCompression=compress)
    data = (folder / f"full{suffix}").read_bytes()
    return _write(folder, f"cut{suffix}", data[: len(data) * 2 // 3])


def _nifti_claiming(folder: Path, size: int) -> Path:
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkFloat32), str(folder / "small.nii"))
    header = bytearray((folder / "small.nii").read_bytes())
    header[42:48] = struct.pack("<3h", size, size, size)  # dim[1..3] (int16) of the NIfTI-1 header
    return _write(folder, "huge.nii", bytes(header))


def _mixed_dicom(case_dir: Path, folder: Path) -> Path:
    ct = ct_image(case_dir)[:, :, :3]
    write_dicom_series(ct, folder / "mixed", series_uid="1.2.826.0.1.3680043.2.1125.1")
    write_dicom_series(ct, folder / "second", series_uid="1.2.826.0.1.3680043.2.1125.2")
    for path in (folder / "second").iterdir():
        path.rename(folder / "mixed" / f"b_{path.name}")
    return folder / "mixed"


def _vector(folder: Path) -> Path:
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(folder / "rgb.nrrd"))
    return folder / "rgb.nrrd"


def _spaced(case_dir: Path, folder: Path, spacing: tuple[float, float, float]) -> Path:
    image = ct_image(case_dir)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(folder / "spaced.nrrd"))
    return folder / "spaced.nrrd"


# id -> (build(case_dir, folder) -> path, exception type, message pattern)
READ_CASES = {
    "zero-byte-file": (lambda c, f: _write(f, "empty.nii.gz", b""), ImageReadError, "file is empty"),
    "missing-file": (lambda c, f: f / "absent.nii.gz", ImageReadError, "file not found"),
    "not-an-image": (lambda c, f: _write(f, "text.nii.gz", b"hello, not an image"), ImageReadError,
                     "not a readable image"),
    "truncated-nii-gz": (lambda c, f: _truncated(c, f, ".nii.gz", True), ImageReadError, "truncated"),
    "truncated-nii": (lambda c, f: _truncated(c, f, ".nii", False), ImageReadError, "truncated"),
    "truncated-nrrd": (lambda c, f: _truncated(c, f, ".nrrd", False), ImageReadError, "could not be read"),
    "truncated-mha-gz": (lambda c, f: _truncated(c, f, ".mha", True), ImageReadError, "could not be read"),
    "2d-image": (lambda c, f: (sitk.WriteImage(sitk.Image([8, 8], sitk.sitkFloat32), str(f / "2d.nrrd")),
                               f / "2d.nrrd")[1], ImageReadError, "expected a 3D image, got 2D"),
    "4d-image": (lambda c, f: (sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(f / "4d.nii.gz")),
                               f / "4d.nii.gz")[1], ImageReadError, "expected a 3D image, got 4D"),
    "vector-image": (lambda c, f: _vector(f), ImageReadError, "scalar image"),
    "single-slice": (lambda c, f: (sitk.WriteImage(ct_image(c)[:, :, :1], str(f / "one.nrrd")), f / "one.nrrd")[1],
                     ImageReadError, "at least 2 voxels"),
    "nan-voxel": (lambda c, f: _image_with(c, f, "nan.nrrd", lambda a: a.__setitem__((3, 4, 5), np.nan)),
                  ImageReadError, "NaN or infinite"),
    "inf-voxel": (lambda c, f: _image_with(c, f, "inf.nrrd", lambda a: a.__setitem__((3, 4, 5), -np.inf)),
                  ImageReadError, "NaN or infinite"),
    "spacing-zero-nrrd": (lambda c, f: _write(f, "s0.nrrd", nrrd_bytes(spacings="0 1 1")), ImageReadError,
                          "spacing"),
    "spacing-zero-mha": (lambda c, f: _write(f, "s0.mha", mha_bytes(spacing="0 1 1")), ImageReadError,
                         "spacing"),
    "spacing-1e6": (lambda c, f: _spaced(c, f, (1e6, 1.0, 1.0)), GeometryError, r"implausible voxel spacing \(1e\+06, 1, 1\)"),
    "spacing-1e-6": (lambda c, f: _spaced(c, f, (1e-6, 1.0, 1.0)), GeometryError, "implausible voxel spacing"),
    "gigantic-nrrd-header": (lambda c, f: _write(f, "huge.nrrd", nrrd_bytes("100000 100000 100000")),
                             GeometryError, "too large"),
    "gigantic-mha-header": (lambda c, f: _write(f, "huge.mha", mha_bytes("100000 100000 100000")),
                            GeometryError, "too large"),
    "gigantic-nii-header": (lambda c, f: _nifti_claiming(f, 32000), GeometryError, "too large"),
    "forged-size-nrrd-1e9-voxels": (lambda c, f: _write(f, "forged.nrrd", nrrd_bytes("1000 1000 1000")),
                                    ImageReadError, "header claims 4000000000 bytes"),
    "forged-size-mha-1e9-voxels": (lambda c, f: _write(f, "forged.mha", mha_bytes("1000 1000 1000")),
                                   ImageReadError, "header claims 4000000000 bytes"),
    "dicom-mixed-series": (_mixed_dicom, ImageReadError, "holds 2 DICOM series"),
    "dicom-empty-folder": (lambda c, f: (f / "nothing").mkdir() or f / "nothing", ImageReadError,
                           "no DICOM series"),
}


@pytest.mark.parametrize("case_id", list(READ_CASES))
def test_read_image_refuses(case_id, case_dir, tmp_path):
    build, error, pattern = READ_CASES[case_id]
    path = build(case_dir, tmp_path)
    start = time.perf_counter()
    with pytest.raises(error, match=pattern) as info:
        read_image(path)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 5.0  # refused from the header, never by allocating 4e15 voxels


def test_negative_spacing_is_read_as_a_flipped_axis(tmp_path):
    """NRRD/MetaImage/NIfTI store a flipped axis as negative spacing; ITK turns it into a flipped direction,
    so the physical geometry is kept and nothing is refused."""
    image = read_image(_write(tmp_path, "neg.nrrd", nrrd_bytes(spacings="-2 1 1")))
    assert image.GetSpacing() == (2.0, 1.0, 1.0)
    assert image.GetDirection()[0] == -1.0


def test_detached_data_files_are_not_mistaken_for_forged_sizes(tmp_path):
    """The inline-size check applies to inline data only: a .mha/.nrrd header naming a separate data file is
    read normally."""
    data = np.arange(64, dtype=np.float32).tobytes()
    (tmp_path / "data.raw").write_bytes(data)
    header = mha_bytes(data=b"").replace(b"ElementDataFile = LOCAL", b"ElementDataFile = data.raw")
    nrrd = nrrd_bytes(data=b"").replace(b"encoding: raw", b"encoding: raw\ndata file: data.raw")
    for name, content in (("detached.mha", header), ("detached.nrrd", nrrd.rstrip(b"\n") + b"\n")):
        image = read_image(_write(tmp_path, name, content))
        assert sitk.GetArrayViewFromImage(image).ravel().tolist() == list(range(64)), name


def test_untruncated_multi_member_gzip_nifti_is_read(case_dir, tmp_path):
    """The truncation check must not refuse valid files: gzip with two members and trailing zero padding."""
    import gzip

    raw = gzip.decompress((case_dir / "ct.nii.gz").read_bytes())
    path = _write(tmp_path, "two.nii.gz", gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]) + b"\0" * 16)
    assert np.array_equal(sitk.GetArrayViewFromImage(read_image(path)),
                          sitk.GetArrayViewFromImage(read_image(case_dir / "ct.nii.gz")))


# ---------------------------------------------------------------------------------------------- combinations
def _images(case_dir: Path) -> dict[str, sitk.Image]:
    return {name: read_image(case_dir / f"{name}.nii.gz") for name in ("ct", "mask", "pet_fdg", "pet_act")}


def _labels(images, edit) -> sitk.Image:
    array = sitk.GetArrayFromImage(images["mask"]).astype(np.float32)
    edit(array)
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(images["mask"])
    return mask


def _shifted(image: sitk.Image, offset_mm: float) -> sitk.Image:
    moved = sitk.Image(image)
    moved.SetOrigin(tuple(o + offset_mm for o in image.GetOrigin()))
    return moved


def _tumour_outside(array):
    array[array == 2] = 1
    array[1:4, 1:4, 1:4] = 2  # a corner of the volume, far from the liver


COMBINATION_CASES = {
    "mask-geometry-mismatch": (lambda i: {"mask": _shifted(i["mask"], 7.0)}, GeometryError,
                               "mask geometry .* does not match the CT"),
    "mask-other-size": (lambda i: {"mask": i["mask"][:, :, 1:]}, GeometryError, "does not match the CT"),
    "mask-empty": (lambda i: {"mask": _labels(i, lambda a: a.fill(0))}, MaskError, "no liver .* or tumour"),
    "mask-without-tumour": (lambda i: {"mask": _labels(i, lambda a: np.minimum(a, 1, out=a))}, MaskError,
                            "no tumour"),
    "tumour-outside-liver": (lambda i: {"mask": _labels(i, _tumour_outside)}, MaskError, "outside the liver"),
    "label-value-3": (lambda i: {"mask": _labels(i, lambda a: a.__setitem__((0, 0, 0), 3))}, MaskError,
                      "mask values must be 0"),
    "label-value-negative": (lambda i: {"mask": _labels(i, lambda a: a.__setitem__((0, 0, 0), -1))}, MaskError,
                             "mask values must be 0"),
    "label-value-fractional": (lambda i: {"mask": _labels(i, lambda a: a.__setitem__((0, 0, 0), 1.5))}, MaskError,
                               "must be whole numbers"),
    "pet-fdg-not-overlapping": (lambda i: {"pet_fdg": _shifted(i["pet_fdg"], 1000.0)}, GeometryError,
                                "FDG PET does not overlap"),
    "pet-act-not-overlapping": (lambda i: {"pet_act": _shifted(i["pet_act"], -1000.0)}, GeometryError,
                                "acetate PET does not overlap"),
}


@pytest.mark.parametrize("case_id", list(COMBINATION_CASES))
def test_preprocess_case_refuses(case_id, case_dir):
    images = _images(case_dir)
    change, error, pattern = COMBINATION_CASES[case_id]
    images.update(change(images))
    with pytest.raises(error, match=pattern) as info:
        preprocess_case(images["ct"], images["mask"], images["pet_fdg"], images["pet_act"], GRID)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("transform", ["scaled-1e-3", "offset-1024", "unit-range"])
def test_ct_not_in_hounsfield_units_warns_but_is_usable(case_dir, transform):
    images = _images(case_dir)
    ct = images["ct"]
    changed = {"scaled-1e-3": lambda: ct * 0.001, "offset-1024": lambda: ct + 1024.0,
               "unit-range": lambda: sitk.RescaleIntensity(ct, 0.0, 1.0)}[transform]()
    assert preprocess_case(ct, images["mask"], config=GRID).warnings == []
    case = preprocess_case(changed, images["mask"], config=GRID)
    assert len(case.warnings) == 1 and "Hounsfield" in case.warnings[0]
    assert case.available[0]
