"""Scan geometry of the synthetic cohort: where the CT and PET voxel grids sit in the scanner (LPS mm).

A scan has one direction matrix D = T F shared by CT and PET: F is a diagonal flip (how the volume is
stored) and T a small oblique tilt or identity. A voxel's patient-frame position is q = F u, where u is its
offset (mm) along the index axes from the patient centre c; its scanner position is c + D u = c + T q.
So the anatomy keeps its true orientation in space (liver on the patient's right) whatever the storage
flip, and grids stay axis-aligned in the patient frame, which keeps voxelisation separable and fast.
Spacings and origins are multiples of 1/64 mm, exact in float32, so NIfTI round trips keep them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reactkd.images.geometry import Geometry

QUANTUM_MM = 1.0 / 64.0
FLIPS = (np.diag([1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0]), np.diag([1.0, 1.0, -1.0]))
#: Probabilities of: identity, in-plane 180 degree flip, reversed slice order, tilt (with any flip).
ORIENTATION_P = (0.4, 0.15, 0.15, 0.3)
TILT_DEG = (3.0, 12.0)


@dataclass(frozen=True)
class SizeSpec:
    """Grid sizes and spacing ranges (mm) of one cohort size."""

    ct_xy: int
    ct_z: tuple[int, int]            # inclusive range of slice counts
    ct_xy_spacing: tuple[float, float]
    ct_z_spacing: float
    pet_xy_spacing: tuple[float, float]
    pet_z_spacing: tuple[float, float]
    pet_supersample: int             # sub-voxels per axis when rendering PET activity
    #: Whole HU on disk. False where a full-dose acquisition's noise (about 0.5 HU at 3.7 mm pixels) is so low
    #: that rounding (variance 1/12 HU^2) would be a large part of it: such CTs are stored as float32.
    integer_hu: bool = True


SIZES: dict[str, SizeSpec] = {
    "small": SizeSpec(96, (48, 48), (3.5, 3.9), 4.0, (4.2, 4.6), (4.5, 5.0), 2, integer_hu=False),
    "full": SizeSpec(512, (140, 160), (0.74, 0.86), 2.5, (4.0, 4.4), (3.0, 4.0), 2),
    # For the dose study: pixels of at most 1 mm and the whole body cross-section (at most 296 x 220 mm, off
    # centre by up to 10 mm) inside the field of view (at least 328 mm), at a reading slice thickness.
    "clinical": SizeSpec(400, (32, 40), (0.82, 0.98), 5.0, (4.0, 4.4), (3.0, 4.0), 2),
}


@dataclass(frozen=True)
class Grid:
    """A voxel grid: its image geometry and the patient-frame coordinates (mm) of its voxel centres."""

    geometry: Geometry
    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.zs.size, self.ys.size, self.xs.size)


@dataclass(frozen=True)
class ScanPlacement:
    """Where the patient lies in the scanner and how the volumes are stored."""

    centre: np.ndarray       # patient-frame origin in scanner LPS mm
    flip: np.ndarray         # (3,) diagonal of F
    direction: np.ndarray    # (3, 3) D = T F


def _quantise(value):
    return np.round(np.asarray(value, float) / QUANTUM_MM) * QUANTUM_MM


def sample_placement(rng: np.random.Generator) -> ScanPlacement:
    kind = int(rng.choice(len(ORIENTATION_P), p=ORIENTATION_P))
    flip = FLIPS[kind] if kind < len(FLIPS) else FLIPS[int(rng.integers(len(FLIPS)))]
    tilt = np.eye(3)
    if kind == len(FLIPS):  # gantry-like tilt about the left-right axis
        angle = np.deg2rad(rng.uniform(*TILT_DEG)) * rng.choice([-1.0, 1.0])
        c, s = np.cos(angle), np.sin(angle)
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    centre = np.array([rng.uniform(-20, 20), rng.uniform(-10, 40), rng.uniform(-800, -300)])
    return ScanPlacement(centre=centre, flip=np.diag(flip).copy(), direction=tilt @ flip)


def _make_grid(placement: ScanPlacement, spacing: np.ndarray, size: np.ndarray, u_start: np.ndarray) -> Grid:
    """Grid whose first voxel centre lies at index-axis offset `u_start` from the patient centre."""
    spacing = _quantise(spacing)
    origin = _quantise(placement.centre + placement.direction @ u_start)
    u0 = placement.direction.T @ (origin - placement.centre)  # exact offset of the quantised origin
    axes = [placement.flip[i] * (u0[i] + spacing[i] * np.arange(size[i])) for i in range(3)]
    geometry = Geometry(size=tuple(int(n) for n in size), spacing=tuple(float(s) for s in spacing),
                        origin=tuple(float(o) for o in origin),
                        direction=tuple(float(d) for d in placement.direction.ravel()))
    return Grid(geometry, *axes)


def sample_grids(rng: np.random.Generator, spec: SizeSpec, placement: ScanPlacement) -> tuple[Grid, Grid]:
    """CT grid and the coarser PET grid of one scan; the PET field of view contains the CT's."""
    ct_size = np.array([spec.ct_xy, spec.ct_xy, rng.integers(spec.ct_z[0], spec.ct_z[1] + 1)])
    xy = rng.uniform(*spec.ct_xy_spacing)
    ct_spacing = np.array([xy, xy, spec.ct_z_spacing])
    # The patient is not perfectly centred in the field of view.
    fov_centre = placement.flip * np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-8, 8)])
    ct_extent = (ct_size - 1) * _quantise(ct_spacing)
    ct = _make_grid(placement, ct_spacing, ct_size, fov_centre - ct_extent / 2)
    pet_xy = rng.uniform(*spec.pet_xy_spacing)
    pet_spacing = _quantise([pet_xy, pet_xy, rng.uniform(*spec.pet_z_spacing)])
    margin = rng.uniform(8, 20, 3)
    pet_size = np.ceil((ct_extent + 2 * margin) / pet_spacing).astype(int) + 1
    pet_centre = fov_centre + rng.uniform(-4, 4, 3)
    pet = _make_grid(placement, pet_spacing, pet_size, pet_centre - (pet_size - 1) * pet_spacing / 2)
    return ct, pet


def supersampled(grid: Grid, placement: ScanPlacement, factor: int,
                 box: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-frame coordinates of `factor`^3 sub-voxel centres per voxel of the grid (or of its (z, y, x)
    `box`), for partial-volume rendering."""
    box = box or (slice(None),) * 3
    out = []
    for i, (centres, span) in enumerate(zip((grid.xs, grid.ys, grid.zs), box[::-1])):
        step = grid.geometry.spacing[i] * placement.flip[i]
        offsets = (np.arange(factor) + 0.5) / factor - 0.5
        out.append((centres[span][:, None] + step * offsets[None, :]).ravel())
    return out[0], out[1], out[2]
