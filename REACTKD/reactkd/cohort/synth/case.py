"""One synthetic dual-tracer PET/CT case: CT in HU, FDG and 11C-acetate PET in SUV, liver/tumour label map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from reactkd.cohort.synth import clinical
from reactkd.cohort.synth.anatomy import N_TISSUES, Anatomy, Tissue, sample_anatomy, true_grade
from reactkd.cohort.synth.grids import SIZES, Grid, sample_grids, sample_placement, supersampled
from reactkd.cohort.synth.paint import TumourPart, bounding_box, paint_tissues
from reactkd.cohort.synth.worlds import DEFAULT_WORLD, World, get_world
from reactkd.errors import ConfigError
from reactkd.images.geometry import from_numpy

T = Tissue
# (mean, sd) per tissue; drawn once per scan (contrast timing, calibration and physiology vary).
CT_HU = {T.AIR: (-1000, 0), T.SUBCUT_FAT: (-100, 8), T.MUSCLE: (50, 5), T.VISCERA: (40, 8),
         T.VISCERAL_FAT: (-95, 8), T.CORTICAL_BONE: (800, 120), T.CANCELLOUS_BONE: (230, 40), T.DISC: (85, 10),
         T.CANAL: (20, 5), T.AORTA: (140, 25), T.KIDNEY: (150, 25), T.SPLEEN: (55, 6), T.LUNG: (-850, 30),
         T.LIVER: (60, 7)}
# Background SUVs (liver, tumour and necrosis are set per case).
FDG_SUV = {T.AIR: 0.0, T.SUBCUT_FAT: 0.35, T.MUSCLE: 0.8, T.VISCERA: 1.3, T.VISCERAL_FAT: 0.4,
           T.CORTICAL_BONE: 0.7, T.CANCELLOUS_BONE: 1.6, T.DISC: 0.6, T.CANAL: 0.5, T.AORTA: 1.7, T.KIDNEY: 4.5,
           T.SPLEEN: 1.9, T.LUNG: 0.45}
ACT_SUV = {T.AIR: 0.0, T.SUBCUT_FAT: 0.3, T.MUSCLE: 0.9, T.VISCERA: 1.6, T.VISCERAL_FAT: 0.35,
           T.CORTICAL_BONE: 0.7, T.CANCELLOUS_BONE: 1.4, T.DISC: 0.6, T.CANAL: 0.5, T.AORTA: 1.0, T.KIDNEY: 3.0,
           T.SPLEEN: 2.6, T.LUNG: 0.4}
LIVER_FDG_SUV = (2.0, 2.8)
TUMOUR_SUV_RANGE = (1.5, 15.0)         # viable tumour, before partial volume and noise
TUMOUR_SUV_RANGE_V2 = (0.3, 25.0)      # v2 has non-avid (iso- or hypo-metabolic) tumours
LIVER_ACT_SUV = (2.0, 2.8)
NECROSIS_HU = (18.0, 6.0)
NECROSIS_UPTAKE = 0.35       # of the liver background
CT_NOISE_HU = (10.0, 20.0)
PET_FWHM_MM = (6.0, 7.5)
PET_COUNTS_PER_SUV = (3.0, 6.0)       # per PET voxel, before filtering
POST_FILTER_VOXELS = 0.8
RIM_MM = 2.5
TEXTURE_MM = 2.0
LIVER_TEXTURE_HU = 4.0
NOISE_POOL = 1 << 22
MASK_OF_TISSUE = np.zeros(N_TISSUES, np.uint8)
MASK_OF_TISSUE[Tissue.LIVER] = 1
MASK_OF_TISSUE[[Tissue.TUMOUR, Tissue.NECROSIS]] = 2


@dataclass(frozen=True)
class TumourTruth:
    """Ground truth of one nodule, for tests and benchmarks."""

    centre_lps: tuple[float, float, float]
    radius_mm: float          # equivalent-sphere radius of the ellipsoid before lobulation
    voxels: int               # on the CT grid
    suv_fdg: float            # true (unblurred) uptake of viable tumour
    suv_act: float
    necrotic: bool
    differentiation: float    # latent continuous grade of the nodule (0-3)


@dataclass(frozen=True)
class SyntheticCase:
    """A case: CT (HU) and mask on the CT grid; PET (SUV) on a coarser grid with the same direction."""

    ct: sitk.Image
    pet_fdg: sitk.Image
    pet_act: sitk.Image
    mask: sitk.Image
    label: int                # the recorded grade (a noisy reading of `differentiation`)
    n_tumours: int
    tumours: tuple[TumourTruth, ...] = ()
    differentiation: float = 1.5  # the patient's latent continuous grade (0-3)
    liver_suv: tuple[float, float] = (0.0, 0.0)  # true liver background (FDG, acetate)

    @property
    def true_label(self) -> int:
        """The grade a perfect reading of the latent differentiation would give."""
        return true_grade(self.differentiation)


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox)
    return field / max(float(field.std()), 1e-6)


def _organ_table(rng: np.random.Generator, world: World, anatomy: Anatomy) -> np.ndarray:
    """HU per tissue code for one scan: v1's values, or v2's portal-venous phase at this scan's timing."""
    if not world.clinical:
        return np.array([rng.normal(*CT_HU.get(code, (0, 0))) for code in range(N_TISSUES)], np.float32)
    delay = rng.uniform(*clinical.PHASE_DELAY_S)
    scale = rng.uniform(*clinical.ENHANCEMENT_SCALE)
    timing = {Tissue.AORTA: 1.0 - clinical.AORTA_LOSS_PER_S * (delay - clinical.PHASE_DELAY_S[0])}
    table = np.array([rng.normal(*clinical.UNENHANCED_HU.get(code, (0, 0)))
                      + scale * clinical.PORTAL_VENOUS_ENHANCEMENT_HU.get(code, 0.0) * timing.get(code, 1.0)
                      for code in range(N_TISSUES)], np.float32)
    table[Tissue.LIVER] -= anatomy.steatosis_hu
    return table


def _render_ct(rng: np.random.Generator, grid: Grid, tissue: np.ndarray, parts: list[TumourPart],
               liver_box: tuple[slice, slice, slice] | None, world: World, anatomy: Anatomy,
               integer_hu: bool) -> np.ndarray:
    table = _organ_table(rng, world, anatomy)
    liver_hu = table[Tissue.LIVER]
    hu = table[tissue]
    spacing_zyx = np.array(grid.geometry.spacing[::-1])
    for part in parts:
        if not part.inside.any():
            continue
        t = part.tumour
        texture = _smooth_noise(rng, part.inside.shape, TEXTURE_MM / spacing_zyx)
        radius = float(np.cbrt(np.prod(t.axes)))
        rim = np.where(part.rho > 1.0 - RIM_MM / radius, t.rim_hu, 0.0)
        viable = liver_hu + t.ct_delta_hu + t.heterogeneity_hu * texture + rim
        if part.focus is not None:  # the less differentiated focus has its own attenuation and texture
            focus = liver_hu + t.focus.ct_delta_hu + t.focus.heterogeneity_hu * texture + rim
            viable = np.where(part.focus, focus, viable)
        necrotic = rng.normal(*NECROSIS_HU) + 0.3 * t.heterogeneity_hu * texture
        box = hu[part.box]
        sub_tissue = tissue[part.box]
        box[:] = np.where(sub_tissue == Tissue.TUMOUR, viable, np.where(sub_tissue == Tissue.NECROSIS, necrotic, box))
    # Liver parenchyma is not perfectly flat either: a faint separable low-frequency texture.
    waves = [np.cos(2 * np.pi * v / rng.uniform(25, 45) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
             for v in (grid.zs, grid.ys, grid.xs)]
    if liver_box is not None:
        bz, by, bx = liver_box
        texture = LIVER_TEXTURE_HU * waves[0][bz, None, None] * waves[1][None, by, None] * waves[2][None, None, bx]
        if anatomy.cirrhosis_hu > 0:  # regenerative nodules of a cirrhotic liver
            texture = texture + anatomy.cirrhosis_hu * _smooth_noise(
                rng, texture.shape, clinical.CIRRHOSIS_NODULE_MM / spacing_zyx)
        hu[liver_box] += np.where(tissue[liver_box] == Tissue.LIVER, texture, np.float32(0.0))
    if world.physical_noise:
        hu = _full_dose_acquisition(rng, hu, grid)
    else:
        _add_noise(rng, hu, float(rng.uniform(*CT_NOISE_HU)))
    if integer_hu:  # scanners store whole HU (int16); integer values also make the files three times smaller
        np.rint(hu, out=hu)
    return np.clip(hu, -1024.0, 3071.0, out=hu)


def _full_dose_acquisition(rng: np.random.Generator, hu: np.ndarray, grid: Grid) -> np.ndarray:
    """The noise-free anatomy as the project's CT simulator acquires it at full dose (Poisson counts in the
    sinogram, FBP): the noise `simulate-ldct` later scales with the dose is the case's own, by construction."""
    import torch

    from reactkd.ldct.simulator import simulate_low_dose

    seed = int(rng.integers(0, 2**62))
    noisy = simulate_low_dose(torch.from_numpy(hu), grid.geometry.spacing[:2], 1.0, seed=seed)
    return noisy.numpy()


def _add_noise(rng: np.random.Generator, volume: np.ndarray, sigma: float) -> None:
    """Add white Gaussian noise. Large volumes draw slices as random windows of a pool of 2^22 normals:
    a single draw per voxel would dominate the generation time of a 512 x 512 x 150 CT."""
    if volume.size <= NOISE_POOL:
        volume += rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(sigma)
        return
    pool = rng.standard_normal(NOISE_POOL, dtype=np.float32) * np.float32(sigma)
    plane = volume[0].size
    for index, start in enumerate(rng.integers(0, NOISE_POOL - plane, volume.shape[0])):
        volume[index] += pool[start:start + plane].reshape(volume.shape[1:])


def tumour_suv(liver_suv: float, ratio: float, world: World | None = None) -> float:
    limits = TUMOUR_SUV_RANGE_V2 if world is not None and world.clinical else TUMOUR_SUV_RANGE
    return float(np.clip(liver_suv * ratio, *limits))


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor^3 blocks (strided sums: several times faster than a reshaped mean)."""
    for axis in range(3):
        index = [slice(None)] * 3
        parts = []
        for k in range(factor):
            index[axis] = slice(k, None, factor)
            parts.append(volume[tuple(index)])
        volume = sum(parts[1:], parts[0].copy())
    return volume * np.float32(1.0 / factor**3)


@dataclass
class _PetTissues:
    """Tissue codes on the PET grid, plus `factor`-times finer codes in a box around the liver, where partial
    volume matters (tumours); elsewhere the PSF hides point sampling."""

    tissue: np.ndarray
    parts: list[TumourPart]
    box: tuple[slice, slice, slice] | None
    fine_tissue: np.ndarray | None
    fine_parts: list[TumourPart]
    factor: int


def _liver_box(anatomy: Anatomy, grid: Grid, margin_mm: float = 0.0) -> tuple[slice, slice, slice] | None:
    reach = anatomy.liver_axes * (1 + float(np.sum(anatomy.liver_wave_amps))) + margin_mm
    return bounding_box(grid.xs, grid.ys, grid.zs, anatomy.liver_centre, reach)


def _pet_tissues(anatomy: Anatomy, grid: Grid, placement, factor: int) -> _PetTissues:
    tissue, parts = paint_tissues(anatomy, grid.xs, grid.ys, grid.zs, strict_tumours=False)
    box = _liver_box(anatomy, grid, margin_mm=2 * max(grid.geometry.spacing))
    if box is None or factor == 1:
        return _PetTissues(tissue, parts, None, None, [], factor)
    fine_tissue, fine_parts = paint_tissues(anatomy, *supersampled(grid, placement, factor, box), strict_tumours=False)
    return _PetTissues(tissue, parts, box, fine_tissue, fine_parts, factor)


def _activity(lut: np.ndarray, uptake_of, tissue: np.ndarray, parts: list[TumourPart]) -> np.ndarray:
    activity = lut[tissue]
    for part in parts:
        box = activity[part.box]
        viable = part.inside & (tissue[part.box] == Tissue.TUMOUR)
        box[viable] = uptake_of(part.tumour, False)
        if part.focus is not None:
            box[viable & part.focus] = uptake_of(part.tumour, True)
    return activity


def _render_pet(rng: np.random.Generator, table: dict[int, float], liver_suv: float, ratio_of,
                tissues: _PetTissues, spacing_zyx: np.ndarray, world: World) -> np.ndarray:
    """Activity (partial-volume averaged around the liver) -> Poisson-like noise -> PSF and post-filter."""
    lut = np.array([table.get(code, 0.0) for code in range(N_TISSUES)], np.float32)
    lut *= np.exp(rng.normal(0.0, 0.08, N_TISSUES)).astype(np.float32)
    lut[Tissue.LIVER] = liver_suv
    lut[Tissue.NECROSIS] = NECROSIS_UPTAKE * liver_suv

    def uptake_of(tumour, in_focus: bool):
        return tumour_suv(liver_suv, ratio_of(tumour.focus if in_focus else tumour), world)

    activity = _activity(lut, uptake_of, tissues.tissue, tissues.parts)
    if tissues.box is not None:
        fine = _activity(lut, uptake_of, tissues.fine_tissue, tissues.fine_parts)
        activity[tissues.box] = _block_mean(fine, tissues.factor)
    # Poisson statistics in their Gaussian limit (variance = mean; ten times cheaper than rng.poisson), then
    # one Gaussian for PSF and post-reconstruction filter together: the noise comes out correlated, the
    # signal with the combined resolution, at the cost of a single filter pass.
    counts_per_suv = np.float32(rng.uniform(*PET_COUNTS_PER_SUV))
    noise = rng.standard_normal(activity.shape, dtype=np.float32)
    activity += np.sqrt(activity / counts_per_suv) * noise
    sigma_mm = rng.uniform(*PET_FWHM_MM) / (2 * np.sqrt(2 * np.log(2)))
    sigma_vox = np.sqrt((sigma_mm / spacing_zyx) ** 2 + POST_FILTER_VOXELS**2)
    return np.maximum(ndimage.gaussian_filter(activity, sigma_vox, mode="constant"), 0.0)


def stores_integer_hu(world: str | World, size: str) -> bool:
    """Whether a case of this world and size holds whole HU (written as int16) rather than float32."""
    return not get_world(world).physical_noise or SIZES[size].integer_hu


def _check_args(seed: int, label: int, size: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label not in (0, 1, 2):
        raise ConfigError(f"label must be 0 (well), 1 (moderate) or 2 (poor), got {label!r}")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r} (use one of {', '.join(SIZES)})")


def patient_anatomy(patient_seed: int, label: int, world: str | World = DEFAULT_WORLD) -> Anatomy:
    """The anatomy and tumours of one patient (shared by all its scans)."""
    return sample_anatomy(np.random.default_rng([int(patient_seed), 0]), int(label), get_world(world))


def generate_case(seed: int, label: int, size: str = "small", patient_seed: int | None = None,
                  world: str | World = DEFAULT_WORLD) -> SyntheticCase:
    """Generate one case recorded as grade `label` (0 well, 1 moderate, 2 poor), deterministically from `seed`.

    The recorded grade is a noisy reading of the patient's latent differentiation, which drives every imaging
    property (see `anatomy.latent_differentiation`); `case.true_label` is the grade without reading error.

    Scans with the same `patient_seed` show the same patient (organs, tumours, uptake) in another session:
    other placement, breath hold, contrast, noise. Without it the patient is drawn from `seed`.
    `world` is "v2" (default), "null" or "v1" (see `worlds.py`).
    """
    _check_args(seed, label, size)
    world = get_world(world)
    if patient_seed is not None:
        _check_args(patient_seed, label, size)
    spec = SIZES[size]
    rng = np.random.default_rng([int(seed), 1])
    anatomy = patient_anatomy(seed if patient_seed is None else patient_seed, label, world)
    anatomy = anatomy.breathing(float(rng.uniform(-5, 5)))
    placement = sample_placement(rng)
    ct_grid, pet_grid = sample_grids(rng, spec, placement)

    tissue, parts = paint_tissues(anatomy, ct_grid.xs, ct_grid.ys, ct_grid.zs, strict_tumours=True)
    ct = _render_ct(rng, ct_grid, tissue, parts, _liver_box(anatomy, ct_grid), world, anatomy,
                    integer_hu=stores_integer_hu(world, size))
    mask = MASK_OF_TISSUE[tissue]

    pet_tissues = _pet_tissues(anatomy, pet_grid, placement, spec.pet_supersample)
    pet_spacing_zyx = np.array(pet_grid.geometry.spacing[::-1])
    liver_ranges = (clinical.LIVER_FDG_SUV, clinical.LIVER_ACT_SUV) if world.clinical else (LIVER_FDG_SUV, LIVER_ACT_SUV)
    liver_fdg, liver_act = rng.uniform(*liver_ranges[0]), rng.uniform(*liver_ranges[1])
    fdg = _render_pet(rng, FDG_SUV, liver_fdg, lambda t: t.fdg_ratio, pet_tissues, pet_spacing_zyx, world)
    act = _render_pet(rng, ACT_SUV, liver_act, lambda t: t.act_ratio, pet_tissues, pet_spacing_zyx, world)

    direction = placement.direction
    truths = tuple(
        TumourTruth(centre_lps=tuple(float(v) for v in placement.centre + direction @ (placement.flip * p.tumour.centre)),
                    radius_mm=float(np.cbrt(np.prod(p.tumour.axes))), voxels=int(p.inside.sum()),
                    suv_fdg=tumour_suv(liver_fdg, p.tumour.fdg_ratio, world),
                    suv_act=tumour_suv(liver_act, p.tumour.act_ratio, world),
                    necrotic=p.tumour.necrosis_fraction > 0, differentiation=p.tumour.differentiation)
        for p in parts if p.inside.any())
    return SyntheticCase(
        ct=from_numpy(ct, ct_grid.geometry), mask=from_numpy(mask, ct_grid.geometry),
        pet_fdg=from_numpy(fdg, pet_grid.geometry), pet_act=from_numpy(act, pet_grid.geometry),
        label=int(label), n_tumours=len(truths), tumours=truths, differentiation=anatomy.differentiation,
        liver_suv=(float(liver_fdg), float(liver_act)))
