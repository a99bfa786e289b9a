import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import GeometryError, MaskError
from reactkd.images.geometry import Geometry
from reactkd.preprocessing import (
    PreprocessConfig,
    clean_label_map,
    coarser_geometry,
    preprocess_case,
    to_native,
)
from synthetic_images import make_case

SMALL = PreprocessConfig(grid=(16, 32, 32))


def test_output_shapes_ranges_and_availability(small_case):
    ct, mask, pet = small_case
    case = preprocess_case(ct, mask, pet_fdg=pet, config=SMALL)
    assert case.images.shape == (3, 16, 32, 32) and case.images.dtype == np.float32
    assert case.available.tolist() == [True, True, False]
    assert case.images.min() >= 0 and case.images.max() <= 1
    assert not case.images[2].any()
    assert set(np.unique(case.label_map)) <= {0, 1, 2} and (case.label_map == 2).any()
    assert case.grid.direction == Geometry.of(ct).direction


def test_crop_covers_liver_with_margin(small_case):
    ct, mask, _ = small_case
    case = preprocess_case(ct, mask, config=SMALL)
    labels = sitk.GetArrayFromImage(mask)
    (x0, x1), (y0, y1), (z0, z1) = case.crop_index
    inside = labels[z0:z1, y0:y1, x0:x1]
    assert (inside > 0).sum() == (labels > 0).sum()
    organ = labels > 0
    for (start, stop), axes, spacing, size in zip(case.crop_index, ((0, 1), (0, 2), (1, 2)), ct.GetSpacing(),
                                                  ct.GetSize()):
        present = np.flatnonzero(organ.any(axis=axes))
        grow = int(np.ceil(SMALL.margin_mm / spacing))
        assert (start, stop) == (max(present[0] - grow, 0), min(present[-1] + 1 + grow, size))


def test_small_liver_islands_are_dropped_and_large_ones_kept():
    labels = np.zeros((12, 20, 20), np.uint8)
    labels[2:10, 2:10, 2:10] = 1  # the liver, 512 voxels
    labels[4:6, 4:6, 4:6] = 2  # a tumour inside it
    labels[2:8, 13:19, 13:19] = 1  # a large second part (216 voxels: 42 % of the largest)
    labels[10:11, 15:16, 15:16] = 1  # a speck (1 voxel)
    cleaned = clean_label_map(labels, min_liver_island_fraction=0.1)
    assert cleaned[10, 15, 15] == 0 and (cleaned[2:8, 13:19, 13:19] == 1).all()
    assert (cleaned == 2).sum() == 8 and (cleaned > 0).sum() == (labels > 0).sum() - 1
    labels[10:11, 1:3, 14:16] = 2  # a tumour far from any liver voxel
    with pytest.raises(MaskError, match="1 tumour component"):
        clean_label_map(labels, min_liver_island_fraction=0.1)


def test_zscore_standardises_each_available_channel(small_case):
    ct, mask, pet = small_case
    case = preprocess_case(ct, mask, pet_fdg=pet, config=PreprocessConfig(grid=(16, 32, 32), zscore=True))
    for channel in (0, 1):
        assert abs(case.images[channel].mean()) < 1e-4 and abs(case.images[channel].std() - 1) < 1e-3
    assert not case.images[2].any()  # an absent modality stays zero


def test_blob_on_grid_maps_back_to_its_physical_point(small_case):
    """A blob placed at a known physical point on the model grid lands at that point on the native grid."""
    ct, mask, _ = small_case
    case = preprocess_case(ct, mask, config=SMALL)
    target_index = np.array([10.0, 20.0, 7.0, 1.0])  # grid (x, y, z)
    point = case.grid.index_to_physical() @ target_index
    blob = np.zeros(SMALL.grid, np.float32)
    z, y, x = np.indices(SMALL.grid)
    blob[:] = np.exp(-((x - 10) ** 2 + (y - 20) ** 2 + (z - 7) ** 2) / 2.0)
    native = to_native(blob, case.grid, case.native, case.crop_index)
    assert Geometry.of(native).same_as(Geometry.of(ct), tol=0)
    array = sitk.GetArrayFromImage(native)
    peak_zyx = np.unravel_index(np.argmax(array), array.shape)
    peak_point = np.array(native.TransformIndexToPhysicalPoint([int(i) for i in peak_zyx[::-1]]))
    assert np.linalg.norm(peak_point - point[:3]) <= np.linalg.norm(ct.GetSpacing())


def test_coarse_feature_map_maps_back_onto_same_box(small_case):
    ct, mask, _ = small_case
    case = preprocess_case(ct, mask, config=SMALL)
    coarse = coarser_geometry(case.grid, (4, 8, 8))
    # The outer corners of the coarse grid's box equal those of the model grid's box.
    corner_fine = case.grid.index_to_physical() @ [-0.5, -0.5, -0.5, 1]
    corner_coarse = coarse.index_to_physical() @ [-0.5, -0.5, -0.5, 1]
    np.testing.assert_allclose(corner_fine, corner_coarse, atol=1e-9)
    ones = to_native(np.ones((4, 8, 8), np.float32), case.grid, case.native, case.crop_index)
    array = sitk.GetArrayFromImage(ones)
    (x0, x1), (y0, y1), (z0, z1) = case.crop_index
    assert np.allclose(array[z0:z1, y0:y1, x0:x1], 1.0) and array.sum() == pytest.approx((x1 - x0) * (y1 - y0) * (z1 - z0))


def test_ct_window_and_pet_normalisation(small_case):
    ct, mask, pet = small_case
    config = PreprocessConfig(grid=(16, 32, 32), ct_window=(0.0, 100.0))
    case = preprocess_case(ct, mask, pet_act=pet, config=config)
    expected = np.clip((case.ct_hu - 0.0) / 100.0, 0, 1)
    np.testing.assert_allclose(case.images[0], expected, atol=1e-6)
    tumour = case.label_map == 2
    assert case.images[2][tumour].mean() > case.images[2][~tumour & (case.label_map == 1)].mean()


def test_bad_masks_raise_mask_errors(small_case):
    ct, mask, _ = small_case
    labels = sitk.GetArrayFromImage(mask)
    empty = sitk.GetImageFromArray(np.zeros_like(labels))
    empty.CopyInformation(ct)
    with pytest.raises(MaskError, match="no liver"):
        preprocess_case(ct, empty, config=SMALL)
    no_tumour = sitk.GetImageFromArray(np.minimum(labels, 1))
    no_tumour.CopyInformation(ct)
    with pytest.raises(MaskError, match="no tumour"):
        preprocess_case(ct, no_tumour, config=SMALL)
    odd = sitk.GetImageFromArray(np.where(labels == 2, 7, labels).astype(np.uint8))
    odd.CopyInformation(ct)
    with pytest.raises(MaskError, match="values"):
        preprocess_case(ct, odd, config=SMALL)
    outside = labels.copy()
    outside[2:5, 2:5, 2:5] = 2  # detached tumour far from the liver
    detached = sitk.GetImageFromArray(outside)
    detached.CopyInformation(ct)
    with pytest.raises(MaskError, match="outside the liver"):
        preprocess_case(ct, detached, config=PreprocessConfig(grid=(32, 64, 64), margin_mm=100))


def test_geometry_errors(small_case):
    ct, mask, pet = small_case
    shifted = sitk.Image(mask)
    shifted.SetOrigin([o + 5 for o in mask.GetOrigin()])
    with pytest.raises(GeometryError, match="does not match"):
        preprocess_case(ct, shifted, config=SMALL)
    far_pet = sitk.Image(pet)
    far_pet.SetOrigin([o + 1000 for o in pet.GetOrigin()])
    with pytest.raises(GeometryError, match="does not overlap"):
        preprocess_case(ct, mask, pet_fdg=far_pet, config=SMALL)


def test_multifocal_tumours_survive_cleaning():
    ct, mask, _ = make_case(shape_zyx=(40, 64, 64), tumour_centre_zyx=(20, 30, 36), tumour_radius=4)
    labels = sitk.GetArrayFromImage(mask)
    z, y, x = np.indices(labels.shape)
    labels[((z - 20) ** 2 + (y - 30) ** 2 + (x - 22) ** 2) <= 16] = 2
    second = sitk.GetImageFromArray(labels)
    second.CopyInformation(ct)
    from scipy import ndimage
    case = preprocess_case(ct, second, config=PreprocessConfig(grid=(32, 64, 64)))
    assert ndimage.label(case.label_map == 2)[1] == 2


def test_deterministic(small_case):
    ct, mask, pet = small_case
    a = preprocess_case(ct, mask, pet_fdg=pet, config=SMALL)
    b = preprocess_case(ct, mask, pet_fdg=pet, config=SMALL)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.label_map, b.label_map)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.float32, np.float64])
def test_mask_pixel_type_does_not_change_the_result(small_case, dtype):
    """The mask checks take shortcuts for integer types (no rounding pass; uint8 used in place): every pixel
    type of the same labels must give the same case, and float masks still get the whole-number check."""
    ct, mask, _ = small_case
    labels = sitk.GetArrayFromImage(mask)
    expected = preprocess_case(ct, mask, config=SMALL)
    typed = sitk.GetImageFromArray(labels.astype(dtype))
    typed.CopyInformation(ct)
    case = preprocess_case(ct, typed, config=SMALL)
    np.testing.assert_array_equal(case.images, expected.images)
    np.testing.assert_array_equal(case.label_map, expected.label_map)
    assert case.crop_index == expected.crop_index
    if np.issubdtype(dtype, np.floating):
        fractional = sitk.GetImageFromArray(np.where(labels == 1, 0.5, labels).astype(dtype))
        fractional.CopyInformation(ct)
        with pytest.raises(MaskError, match="whole numbers"):
            preprocess_case(ct, fractional, config=SMALL)
        background_only = sitk.GetImageFromArray(np.full(labels.shape, 0.4, dtype))
        background_only.CopyInformation(ct)
        with pytest.raises(MaskError, match="whole numbers"):
            preprocess_case(ct, background_only, config=SMALL)


def test_liver_referenced_pet_is_the_tumour_to_liver_ratio(small_case):
    """PET 8 in the tumour, 2 in the liver: ratio 4, clipped at 4 -> 1.0; the liver reads 2/2/4 = 0.25,
    whatever the injected dose (the same case at 3x the uptake gives the same channel)."""
    ct, mask, pet = small_case
    config = PreprocessConfig(grid=(16, 32, 32), pet_scale="liver", pet_liver_ratio_max=4.0)
    case = preprocess_case(ct, mask, pet_fdg=pet, config=config)
    liver_core = case.label_map == 1
    assert np.median(case.images[1][liver_core]) == pytest.approx(0.25)
    assert case.images[1][case.label_map == 2].max() == pytest.approx(1.0)
    tripled = preprocess_case(ct, mask, pet_fdg=pet * 3.0, config=config)
    np.testing.assert_allclose(tripled.images[1], case.images[1], atol=1e-6)
    assert config.to_dict()["pet_scale"] == "liver"
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(GeometryError, match="pet_scale"):
        PreprocessConfig(pet_scale="suv")
    with pytest.raises(MaskError, match="liver parenchyma"):
        preprocess_case(ct, mask, pet_fdg=pet * 0.0, config=config)


@pytest.mark.parametrize("value,refused", [(-1.3e4, True), (3.6e4, True), (np.inf, True), (-1.1e4, False),
                                           (3.2e4, False)])
def test_ct_values_no_scanner_writes_are_refused_at_the_limits(value, refused):
    """The bounds of CT_HU_LIMITS, judged inside the organ only; the same values outside it pass."""
    from reactkd.errors import ImageReadError
    from reactkd.preprocessing import check_ct_values

    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:4, 2:5] = 1
    inside, outside = np.full(labels.shape, 55.0, np.float32), np.full(labels.shape, 55.0, np.float32)
    inside[2, 3, 4], outside[0, 0, 0] = value, value
    check_ct_values(sitk.GetImageFromArray(outside), labels)
    if refused:
        with pytest.raises(ImageReadError, match="outside what any CT holds"):
            check_ct_values(sitk.GetImageFromArray(inside), labels)
    else:
        check_ct_values(sitk.GetImageFromArray(inside), labels)


def test_pet_warnings_name_a_negative_liver_share_above_a_tenth():
    from reactkd.preprocessing import PET_NEGATIVE_SHARE, pet_warnings

    labels = np.ones((2, 5, 10), np.uint8)
    pet = np.full(labels.shape, 2.5, np.float32)
    pet.ravel()[: int(PET_NEGATIVE_SHARE * pet.size)] = -0.2  # exactly the share allowed: noise
    assert pet_warnings("FDG PET", pet, labels) == []
    pet.ravel()[: int(PET_NEGATIVE_SHARE * pet.size) + 3] = -0.2
    (warning,) = pet_warnings("FDG PET", pet, labels)
    assert warning.startswith("FDG PET is negative in 13% of the liver region")
    assert "constant" in pet_warnings("FDG PET", np.full(labels.shape, -1.0, np.float32), labels)[0]
