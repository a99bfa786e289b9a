import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series import write_dicom_series
from reactkd.errors import GeometryError, ImageReadError
from reactkd.images.geometry import Geometry, from_numpy, to_numpy
from reactkd.images.readers import read_image
from reactkd.images.writers import write_image
from synthetic_images import OBLIQUE, make_case


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_and_values(tmp_path, suffix):
    ct, _, _ = make_case()
    path = write_image(ct, tmp_path / f"ct{suffix}")
    back = read_image(path)
    assert Geometry.of(back).same_as(Geometry.of(ct), tol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct), atol=1e-4)


def test_dicom_series_round_trip(tmp_path):
    ct, _, _ = make_case(shape_zyx=(6, 32, 32))
    ct = sitk.Round(ct)
    write_dicom_series(ct, tmp_path / "series")
    back = read_image(tmp_path / "series")
    assert back.GetSize() == ct.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetDirection(), OBLIQUE, atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct), atol=0.5)


def test_numpy_helpers_round_trip():
    ct, _, _ = make_case(shape_zyx=(5, 6, 7))
    array, geometry = to_numpy(ct)
    assert array.shape == (5, 6, 7) and geometry.size == (7, 6, 5)
    again = from_numpy(array, geometry)
    assert Geometry.of(again) == geometry
    with pytest.raises(GeometryError):
        from_numpy(array[:, :, :3], geometry)


def test_index_to_ras_flips_lps():
    ct, _, _ = make_case()
    geometry = Geometry.of(ct)
    point_lps = np.array(ct.TransformContinuousIndexToPhysicalPoint((3.0, 4.0, 5.0)))
    np.testing.assert_allclose(geometry.index_to_physical() @ [3, 4, 5, 1], np.append(point_lps, 1), atol=1e-9)
    np.testing.assert_allclose((geometry.index_to_ras() @ [3, 4, 5, 1])[:3], point_lps * [-1, -1, 1], atol=1e-9)


def test_bad_files_raise_specific_errors(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "text.nrrd").write_text("not an image")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.nii.gz")
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(tmp_path / "text.nrrd")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.nii.gz")
    with pytest.raises(ImageReadError, match="no DICOM"):
        read_image(tmp_path)


def test_wrong_dimensionality_nan_and_spacing(tmp_path):
    write_image(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), tmp_path / "flat.nrrd")
    with pytest.raises(ImageReadError, match="3D"):
        read_image(tmp_path / "flat.nrrd")
    write_image(sitk.Image([8, 8, 3, 2], sitk.sitkFloat32), tmp_path / "four.nrrd")
    with pytest.raises(ImageReadError, match="3D"):
        read_image(tmp_path / "four.nrrd")
    nan = np.zeros((4, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    write_image(sitk.GetImageFromArray(nan), tmp_path / "nan.nrrd")
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(tmp_path / "nan.nrrd")
    huge = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32))
    huge.SetSpacing((1e6, 1, 1))
    write_image(huge, tmp_path / "huge.nrrd")
    with pytest.raises(GeometryError, match="spacing"):
        read_image(tmp_path / "huge.nrrd")


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    ct, _, _ = make_case(shape_zyx=(4, 8, 8))
    target = write_image(ct, tmp_path / "ct.nrrd")
    before = target.read_bytes()

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OSError):
        write_image(ct * 2, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkFloat32])
def test_label_maps_keep_integer_pixel_types(tmp_path, pixel):
    """`labels=True` keeps an integer mask as it is (no float copy); a float file still comes back float32,
    so that the whole-number check sees it. Without the flag every image is float32."""
    _, mask, _ = make_case()
    path = write_image(sitk.Cast(mask, pixel), tmp_path / "mask.nrrd")
    as_labels = read_image(path, labels=True)
    expected = sitk.sitkFloat32 if pixel == sitk.sitkFloat32 else pixel
    assert as_labels.GetPixelID() == expected
    assert read_image(path).GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(as_labels), sitk.GetArrayFromImage(mask))
    assert Geometry.of(as_labels).same_as(Geometry.of(mask), tol=1e-5)
