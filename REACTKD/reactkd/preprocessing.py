"""Preprocessing shared by training and inference (one implementation, byte for byte).

Steps (METHOD.md): validate the masks on the CT grid, crop to the liver bounding box plus a margin, resample
CT, PET and the label map directly onto a fixed model grid covering that box (PET linear, mask nearest), clean
the label map on the grid while keeping every tumour component, window the CT and normalise PET. The model
grid's geometry is kept so any map on it (or on a coarser feature grid over the same box) goes back onto the
native CT grid exactly with `to_native`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from reactkd.errors import GeometryError, ImageReadError, MaskError
from reactkd.images.geometry import Geometry
from reactkd.vocabulary import LIVER_CODE, MODALITIES, TUMOUR_CODE

PET_SCALES = ("percentile", "liver")


MAX_GRID_VOXELS = 256 * 512 * 512  # far above any model here; a model grid of 4e8 voxels is refused


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings; stored in every model package so inference repeats training exactly."""

    grid: tuple[int, int, int] = (64, 128, 128)  # D, H, W of the model input
    margin_mm: float = 10.0
    ct_window: tuple[float, float] = (-160.0, 240.0)
    pet_percentiles: tuple[float, float] = (1.0, 99.0)
    # "percentile": per-volume 1st-99th percentile inside the body; "liver": tumour-to-liver ratio (PET over
    # the median uptake of the liver parenchyma, the clinical convention for HCC PET), clipped at
    # pet_liver_ratio_max and scaled to [0, 1].
    pet_scale: str = "percentile"
    pet_liver_ratio_max: float = 6.0
    zscore: bool = False
    min_liver_island_fraction: float = 0.05  # liver islands below this share of the largest are dropped

    def __post_init__(self) -> None:
        """Bounds on every value: these settings come from configs and from model packages, both user files."""
        def numbers(value, count: int) -> bool:
            return isinstance(value, (tuple, list)) and len(value) == count and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)

        if not numbers(self.grid, 3) or not all(float(n).is_integer() and 8 <= n <= 512 for n in self.grid) \
                or math.prod(self.grid) > MAX_GRID_VOXELS:
            raise GeometryError(f"model grid {self.grid} must be three whole sizes of 8-512, at most "
                                f"{MAX_GRID_VOXELS} voxels together")
        object.__setattr__(self, "grid", tuple(int(n) for n in self.grid))  # frozen dataclass
        if not numbers([self.margin_mm], 1) or not 0 <= self.margin_mm <= 200:
            raise GeometryError(f"margin_mm must be a number in [0, 200], got {self.margin_mm!r}")
        if not numbers(self.ct_window, 2) or not -3000 <= self.ct_window[0] < self.ct_window[1] <= 10000:
            raise GeometryError(f"CT window {self.ct_window} must be (low, high) Hounsfield units, low < high")
        if not numbers(self.pet_percentiles, 2) or not 0 <= self.pet_percentiles[0] < self.pet_percentiles[1] <= 100:
            raise GeometryError(f"pet_percentiles {self.pet_percentiles} must be (low, high) with 0 <= low < high <= 100")
        if self.pet_scale not in PET_SCALES:
            raise GeometryError(f"pet_scale must be one of {', '.join(PET_SCALES)}, got {self.pet_scale!r}")
        if not numbers([self.pet_liver_ratio_max], 1) or not 0 < self.pet_liver_ratio_max <= 1000:
            raise GeometryError("pet_liver_ratio_max must be a number in (0, 1000]")
        if not isinstance(self.zscore, bool):
            raise GeometryError(f"zscore must be true or false, got {self.zscore!r}")
        if not numbers([self.min_liver_island_fraction], 1) or not 0 <= self.min_liver_island_fraction <= 1:
            raise GeometryError(f"min_liver_island_fraction must lie in [0, 1] (a share of the largest liver part), "
                                f"got {self.min_liver_island_fraction!r}")

    def to_dict(self) -> dict:
        return {"grid": list(self.grid), "margin_mm": self.margin_mm, "ct_window": list(self.ct_window),
                "pet_percentiles": list(self.pet_percentiles), "pet_scale": self.pet_scale,
                "pet_liver_ratio_max": self.pet_liver_ratio_max, "zscore": self.zscore,
                "min_liver_island_fraction": self.min_liver_island_fraction}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        if not isinstance(data, dict):
            raise GeometryError(f"preprocessing settings must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise GeometryError(f"unknown preprocessing setting(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class PreprocessedCase:
    """A case on the model grid. `images` is (3, D, H, W) normalised in MODALITIES order (zeros if absent)."""

    images: np.ndarray
    available: np.ndarray  # (3,) bool
    ct_hu: np.ndarray  # (D, H, W) HU on the model grid, for the low-dose simulator
    label_map: np.ndarray  # (D, H, W) uint8, cleaned
    grid: Geometry  # model grid geometry (LPS)
    native: Geometry  # CT geometry
    crop_index: tuple[tuple[int, int], ...] = field(default=())  # native (x, y, z) [start, stop) of the crop
    warnings: list[str] = field(default_factory=list)  # usable but suspicious input (e.g. CT not in HU)


def check_mask(ct: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """Validate a label map against its CT and return it as a read-only uint8 (z, y, x) array."""
    if not Geometry.of(mask).same_as(Geometry.of(ct), tol=1e-3):
        raise GeometryError("mask geometry (size, spacing, origin or direction) does not match the CT; "
                            "resample the segmentation onto the CT first")
    array = sitk.GetArrayViewFromImage(mask)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > TUMOUR_CODE:
        raise MaskError(f"mask values must be 0 (background), 1 (liver) and 2 (tumour); found range [{low:g}, {high:g}]")
    # Integer masks are whole numbers by construction: the rounding check (a full pass) is for float masks only.
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise MaskError("mask values must be whole numbers 0 (background), 1 (liver) and 2 (tumour); "
                        "found fractional values (an interpolated mask?)")
    if high < LIVER_CODE:  # values lie in [0, 2], so a maximum below 1 means background only
        raise MaskError("mask has no liver (label 1) or tumour (label 2) voxels")
    return array if array.dtype == np.uint8 else array.astype(np.uint8)  # a view: valid while `mask` lives


def liver_box(labels: np.ndarray, spacing_xyz: tuple[float, float, float], margin_mm: float) -> tuple[tuple[int, int], ...]:
    """Index box (x, y, z) [start, stop) around liver + tumour voxels, grown by margin_mm, clipped to the image."""
    organ = labels > 0
    box = []
    for axis_zyx, spacing in zip((2, 1, 0), spacing_xyz):
        other = tuple(a for a in range(3) if a != axis_zyx)
        present = np.flatnonzero(organ.any(axis=other))
        grow = int(np.ceil(margin_mm / spacing))
        size = labels.shape[axis_zyx]
        box.append((max(int(present[0]) - grow, 0), min(int(present[-1]) + 1 + grow, size)))
    return tuple(box)


def grid_geometry(native: Geometry, box: tuple[tuple[int, int], ...], grid_dhw: tuple[int, int, int]) -> Geometry:
    """Geometry of a grid of size grid_dhw whose voxels tile the native index box exactly."""
    size_xyz = tuple(int(s) for s in reversed(grid_dhw))
    extent = np.array([stop - start for start, stop in box], dtype=float)
    factor = extent / np.array(size_xyz, dtype=float)
    spacing = np.asarray(native.spacing) * factor
    # Centre of the first output voxel in native continuous index: box start - 0.5 + 0.5 * factor.
    first = np.array([start for start, _ in box], dtype=float) - 0.5 + 0.5 * factor
    origin = native.index_to_physical() @ np.append(first, 1.0)
    return Geometry(size_xyz, tuple(float(s) for s in spacing), tuple(float(o) for o in origin[:3]),
                    native.direction)


def coarser_geometry(grid: Geometry, shape_dhw: tuple[int, int, int]) -> Geometry:
    """Geometry of a coarser grid (e.g. a feature map) covering exactly the same box as `grid`."""
    size_xyz = tuple(int(s) for s in reversed(shape_dhw))
    factor = np.asarray(grid.size, dtype=float) / np.asarray(size_xyz, dtype=float)
    first = -0.5 + 0.5 * factor
    origin = grid.index_to_physical() @ np.append(first, 1.0)
    spacing = np.asarray(grid.spacing) * factor
    return Geometry(size_xyz, tuple(float(s) for s in spacing), tuple(float(o) for o in origin[:3]), grid.direction)


def resample_to(image: sitk.Image, geometry: Geometry, interpolator: int, default: float = 0.0) -> sitk.Image:
    """Resample `image` onto `geometry` (identity transform in physical space)."""
    return sitk.Resample(image, list(geometry.size), sitk.Transform(), interpolator, list(geometry.origin),
                         list(geometry.spacing), list(geometry.direction), default, sitk.sitkFloat32)


def overlap_fraction(image: sitk.Image, geometry: Geometry) -> float:
    """Share of the grid's voxel centres that fall inside `image`'s field of view."""
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    inside = sitk.Resample(ones, list(geometry.size), sitk.Transform(), sitk.sitkNearestNeighbor,
                           list(geometry.origin), list(geometry.spacing), list(geometry.direction), 0, sitk.sitkUInt8)
    return float(sitk.GetArrayViewFromImage(inside).mean())


def clean_label_map(labels: np.ndarray, min_liver_island_fraction: float) -> np.ndarray:
    """Drop small liver islands and tumour voxels detached from the liver, keep every tumour component."""
    organ = labels > 0
    components, count = ndimage.label(organ)
    if count == 0:
        raise MaskError("the liver mask is empty on the model grid")
    sizes = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_liver_island_fraction * sizes.max()) + 1
    kept = np.isin(components, keep)
    tumour = labels == TUMOUR_CODE
    tumour_components, n_tumours = ndimage.label(tumour)
    if n_tumours:
        # A tumour is part of the organ mask; it is "outside the liver" if none of its neighbours is liver.
        liver_near = ndimage.binary_dilation(labels == LIVER_CODE, iterations=1)
        touching = np.unique(tumour_components[liver_near & tumour])
        detached = np.setdiff1d(np.arange(1, n_tumours + 1), touching)
        if detached.size:
            raise MaskError(f"{detached.size} tumour component(s) lie outside the liver")
    cleaned = np.where(kept, labels, 0).astype(np.uint8)
    return cleaned


#: Median HU of liver parenchyma in any CT phase lies well inside this range; values outside suggest other units.
LIVER_HU_RANGE = (-150.0, 350.0)


def hounsfield_warnings(ct_hu: np.ndarray, labels: np.ndarray) -> list[str]:
    """Warnings when a CT (on the model grid) does not look like Hounsfield units; the case is still usable."""
    liver = ct_hu[labels == LIVER_CODE]
    if liver.size:
        median = float(np.median(liver))
        if not LIVER_HU_RANGE[0] <= median <= LIVER_HU_RANGE[1]:
            return [f"CT values inside the liver (median {median:.4g}) do not look like Hounsfield units "
                    f"(expected {LIVER_HU_RANGE[0]:g} to {LIVER_HU_RANGE[1]:g}); check rescale slope/intercept"]
    low, high = float(ct_hu.min()), float(ct_hu.max())
    if high - low < 50.0:
        return [f"CT values span only [{low:.4g}, {high:.4g}]; this does not look like a CT in Hounsfield units "
                "(normalised data?)"]
    return []


#: Hounsfield units no CT holds: the widest scale scanners write is Siemens' extended CT scale (-10240 to 30710 HU,
#: for metal), 16-bit storage ends near +-32768; the margin keeps the noise of simulated 0.1 %-dose scans
#: (`evaluate --doses`, thousands of HU) inside. A value beyond these is corruption, not anatomy.
CT_HU_LIMITS = (-12000.0, 35000.0)


def check_ct_values(ct: sitk.Image, labels: np.ndarray) -> None:
    """Refuse a CT (crop) whose liver or tumour (`labels` > 0, the same grid) holds values no CT can hold: the
    window would clip them to plausible tissue and the case would get a confident grade."""
    values = sitk.GetArrayViewFromImage(ct)
    low, high = CT_HU_LIMITS
    if low <= float(values.min()) and float(values.max()) <= high:  # one pass over the crop for valid CTs
        return
    organ = values[labels > 0]
    worst = [float(v) for v in (organ.min(), organ.max()) if not low <= float(v) <= high] if organ.size else []
    if worst:
        raise ImageReadError(f"CT values inside the liver or tumour reach {worst[0]:.4g} HU, outside what any CT "
                             f"holds ({low:g} to {high:g} HU): the file is corrupt or not a CT in Hounsfield units")


#: More than this share of negative PET values in the liver is a broken series (wrong rescale, a subtraction
#: image): reconstructed uptake dips below zero only through noise where there is almost none.
PET_NEGATIVE_SHARE = 0.1


def pet_warnings(name: str, pet: np.ndarray, labels: np.ndarray) -> list[str]:
    """Warnings for a PET (on the model grid) whose uptake across the liver (`labels` > 0) is implausible."""
    organ = pet[labels > 0]
    if not organ.size or float(np.ptp(organ)) <= 1e-6:
        return [f"{name} is constant ({float(pet.max()):.3g}) across the liver: it carries no "
                "uptake information; check that the right series was given"]
    negative = float(np.mean(organ < 0))
    if negative > PET_NEGATIVE_SHARE:
        return [f"{name} is negative in {negative:.0%} of the liver region; uptake (SUV) cannot be negative beyond "
                "noise: check the series and its rescale slope/intercept"]
    return []


def eight_bit_warnings(ct: sitk.Image) -> list[str]:
    """A warning when the CT around the liver holds only whole numbers in [0, 255]: an 8-bit image (a screenshot
    or a windowed export) passes the Hounsfield checks, but its fat, air and contrast are clipped away."""
    values = sitk.GetArrayViewFromImage(ct)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255 and np.array_equal(values, np.round(values)):
        return [f"CT values around the liver are whole numbers in [{low:.0f}, {high:.0f}], nothing below 0 HU: this "
                "looks like an 8-bit image (a screenshot or a windowed export), not a CT in Hounsfield units"]
    return []


def normalise_ct(ct_hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip CT to the HU window and scale to [0, 1] (also used on simulated low-dose CT)."""
    low, high = window
    return ((np.clip(ct_hu, low, high) - low) / (high - low)).astype(np.float32)


def normalise_pet(pet: np.ndarray, body: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip PET to its percentile range inside the body and scale to [0, 1]."""
    values = pet[body] if body.any() else pet.ravel()
    low, high = np.percentile(values, percentiles)
    if high - low < 1e-6:  # nearly uniform uptake: fall back to the full range before giving up
        low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return np.zeros_like(pet, dtype=np.float32)
    return ((np.clip(pet, low, high) - low) / (high - low)).astype(np.float32)


def normalise_pet_to_liver(pet: np.ndarray, label_map: np.ndarray, ratio_max: float) -> np.ndarray:
    """PET as a ratio to the median uptake of the liver parenchyma (label 1), clipped to [0, ratio_max] and
    scaled to [0, 1]: a tumour as avid as the liver reads 1 / ratio_max whatever the injected dose."""
    parenchyma = pet[label_map == LIVER_CODE]
    reference = float(np.median(parenchyma)) if parenchyma.size else 0.0
    if reference <= 1e-6:
        raise MaskError("PET uptake in the liver parenchyma is zero: cannot scale PET to the liver")
    return (np.clip(pet / reference, 0.0, ratio_max) / ratio_max).astype(np.float32)


def _zscore(volume: np.ndarray) -> np.ndarray:
    std = float(volume.std())
    return ((volume - volume.mean()) / std).astype(np.float32) if std > 1e-6 else volume


def preprocess_case(ct: sitk.Image, mask: sitk.Image, pet_fdg: sitk.Image | None = None,
                    pet_act: sitk.Image | None = None, config: PreprocessConfig | None = None,
                    require_tumour: bool = True) -> PreprocessedCase:
    """Bring one case onto the model grid: crop to the liver with a margin, resample, clean the label map and
    normalise each modality. Training and inference both call this (byte-identical inputs).

    Args:
        ct: CT in HU; its grid is the native space every output maps back to.
        mask: label map on the CT's grid (0 background, 1 liver, 2 tumour).
        pet_fdg, pet_act: PET volumes in SUV on any grid covering the liver (None when absent).
        config: the package's settings (default: PreprocessConfig()).
        require_tumour: refuse a mask without tumour voxels (on the native or the model grid).

    Raises:
        GeometryError, MaskError: input that cannot be graded (one-line reason).

    Example:
        >>> import numpy as np, SimpleITK as sitk
        >>> labels = np.zeros((24, 40, 40), np.uint8)
        >>> labels[4:20, 8:32, 8:32] = 1
        >>> labels[10:14, 18:22, 18:22] = 2
        >>> ct = sitk.GetImageFromArray(np.where(labels > 0, 60.0, 0.0).astype(np.float32))
        >>> mask = sitk.GetImageFromArray(labels)
        >>> case = preprocess_case(ct, mask, config=PreprocessConfig(grid=(16, 32, 32)))
        >>> case.images.shape, case.available.tolist()
        ((3, 16, 32, 32), [True, False, False])
        >>> sorted(np.unique(case.label_map).tolist())
        [0, 1, 2]
    """
    config = config or PreprocessConfig()
    native = Geometry.of(ct)
    labels = check_mask(ct, mask)
    if require_tumour and not (labels == TUMOUR_CODE).any():
        raise MaskError("mask has no tumour (label 2) voxels")
    box = liver_box(labels, native.spacing, config.margin_mm)
    grid = grid_geometry(native, box, config.grid)
    # Crop first so resampling touches only the liver region of large CTs.
    crop = [slice(start, stop) for start, stop in box]
    ct_crop = ct[crop[0], crop[1], crop[2]]
    mask_crop = mask[crop[0], crop[1], crop[2]]
    check_ct_values(ct_crop, labels[crop[2], crop[1], crop[0]])
    ct_hu = sitk.GetArrayFromImage(resample_to(ct_crop, grid, sitk.sitkLinear, default=-1024.0))
    label_map = sitk.GetArrayFromImage(resample_to(mask_crop, grid, sitk.sitkNearestNeighbor)).astype(np.uint8)
    label_map = clean_label_map(label_map, config.min_liver_island_fraction)
    if require_tumour and not (label_map == TUMOUR_CODE).any():
        raise MaskError("the tumour is too small to be seen on the model grid")
    images = np.zeros((len(MODALITIES), *config.grid), dtype=np.float32)
    available = np.zeros(len(MODALITIES), dtype=bool)
    images[0] = normalise_ct(ct_hu, config.ct_window)
    available[0] = True
    body = ct_hu > -500.0
    warnings = hounsfield_warnings(ct_hu, label_map) + eight_bit_warnings(ct_crop)
    for channel, (name, pet) in enumerate((("FDG PET", pet_fdg), ("acetate PET", pet_act)), start=1):
        if pet is None:
            continue
        overlap = overlap_fraction(pet, grid)
        if overlap < 0.5:
            raise GeometryError(f"{name} does not overlap the CT's liver region (check its registration)")
        if overlap < 0.95:
            warnings.append(f"{name} covers only {overlap:.0%} of the liver region; uptake outside it reads as 0")
        pet_grid = sitk.GetArrayFromImage(resample_to(pet, grid, sitk.sitkLinear))
        warnings += pet_warnings(name, pet_grid, label_map)
        if config.pet_scale == "liver":
            images[channel] = normalise_pet_to_liver(pet_grid, label_map, config.pet_liver_ratio_max)
        else:
            images[channel] = normalise_pet(pet_grid, body, config.pet_percentiles)
        available[channel] = True
    if config.zscore:
        images[available] = np.stack([_zscore(v) for v in images[available]])
    return PreprocessedCase(images, available, ct_hu.astype(np.float32), label_map, grid, native, box, warnings)


def box_to_native(volume: np.ndarray, grid: Geometry, native: Geometry, box: tuple[tuple[int, int], ...],
                  interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Map a (d, h, w) volume on the model grid, or on any coarser grid over the same box, onto the native CT
    grid's crop `box` only: an image of the box's size whose geometry places it exactly on the CT grid."""
    shape = tuple(volume.shape)
    source_geometry = grid if shape == tuple(reversed(grid.size)) else coarser_geometry(grid, shape)
    source = source_geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32)))
    box_size = [stop - start for start, stop in box]
    box_origin = native.index_to_physical() @ np.array([start for start, _ in box] + [1.0], dtype=float)
    box_geometry = Geometry(tuple(box_size), native.spacing, tuple(box_origin[:3]), native.direction)
    # Extrapolate to the box edges (nearest) rather than pad with 0: the grid's outer voxel centres lie half a
    # voxel inside the box.
    return sitk.Resample(source, box_geometry.size, sitk.Transform(), interpolator, box_geometry.origin,
                         box_geometry.spacing, box_geometry.direction, 0.0, sitk.sitkFloat32, True)


def to_native(volume: np.ndarray, grid: Geometry, native: Geometry, box: tuple[tuple[int, int], ...],
              interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Map a (d, h, w) volume on the model grid, or on any coarser grid over the same box, onto the native CT grid.

    Only the crop box is resampled (`box_to_native`; the rest is 0), so this is cheap even for large CTs.
    """
    inside = box_to_native(volume, grid, native, box, interpolator)
    # A zero image of the CT's size with the box pasted in place: one full-size buffer and no full-size copy
    # (building it in NumPy first costs 25 % more; sitk.ConstantPad, which checks the region per pixel, 3x more).
    full = sitk.Image(native.size, sitk.sitkFloat32)
    (x0, x1), (y0, y1), (z0, z1) = box
    full[x0:x1, y0:y1, z0:z1] = inside
    return native.apply_to(full)
