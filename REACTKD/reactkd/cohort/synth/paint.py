"""Voxelise an `Anatomy` into a tissue-code volume on a grid that is axis-aligned in the patient frame.

The grid is given by three 1D coordinate vectors (patient-frame mm of the voxel centres along x, y, z; they
may decrease when the scan stores an axis flipped). Everything is broadcast from 1D/2D pieces and organs are
evaluated inside their bounding boxes only, so a 512 x 512 x 150 volume takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from reactkd.cohort.synth.anatomy import N_TISSUES, Anatomy, Tissue, Tumour, liver_level

DISC_MM = 6.0
CORTEX_MM = 2.5
#: Level of the visceral texture (a sum of three products of random-phase cosines) above which the cavity
#: holds fat rather than bowel: its 65th percentile, so about 35% of the cavity is visceral fat.
VISCERAL_FAT_LEVEL = 0.34


@dataclass
class TumourPart:
    """Where one tumour landed on a grid: a bounding box and, inside it, its voxels and radial coordinate."""

    tumour: Tumour
    box: tuple[slice, slice, slice]     # (z, y, x)
    inside: np.ndarray                  # bool, box-shaped
    rho: np.ndarray                     # float32, box-shaped: lobulated normalised radius (1 on the margin)
    focus: np.ndarray | None = None     # bool, box-shaped: inside the tumour's less differentiated focus


def _lut(codes: tuple[int, ...]) -> np.ndarray:
    table = np.zeros(N_TISSUES, bool)
    table[list(codes)] = True
    return table


ABDOMINAL_SPACE = _lut((Tissue.VISCERA, Tissue.VISCERAL_FAT))
SOFT_ORGAN_SPACE = _lut((Tissue.VISCERA, Tissue.VISCERAL_FAT, Tissue.LUNG))
LIVER_OR_TUMOUR = _lut((Tissue.LIVER, Tissue.TUMOUR, Tissue.NECROSIS))


def _span(values: np.ndarray, lo: float, hi: float) -> slice | None:
    hits = np.flatnonzero((values >= lo) & (values <= hi))
    return slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else None


def bounding_box(xs, ys, zs, centre, half) -> tuple[slice, slice, slice] | None:
    """(z, y, x) slices of the grid points within `centre` +- `half` (mm, x/y/z); None if there are none."""
    spans = [_span(v, c - h, c + h) for v, c, h in zip((zs, ys, xs), centre[::-1], np.broadcast_to(half, 3)[::-1])]
    return None if any(s is None for s in spans) else tuple(spans)


def _cross_section(anatomy: Anatomy, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The z-invariant part of the abdomen: body wall, cavity, spine, paraspinal muscles, aorta. (y, x)."""
    x, y = xs[None, :], ys[:, None]
    ax, ay = anatomy.body_axes
    cav_x, cav_y = anatomy.cavity_axes
    inner = anatomy.fat_mm
    section = np.full((ys.size, xs.size), Tissue.AIR, np.uint8)
    section[(x / ax) ** 2 + (y / ay) ** 2 <= 1] = Tissue.SUBCUT_FAT
    section[(x / (ax - inner)) ** 2 + (y / (ay - inner)) ** 2 <= 1] = Tissue.MUSCLE
    section[(x / cav_x) ** 2 + (y / cav_y) ** 2 <= 1] = Tissue.VISCERA
    sy, sr = anatomy.spine_y, anatomy.spine_radius
    for side in (-1, 1):
        section[((x - side * (sr + 22)) / 24) ** 2 + ((y - sy - sr - 10) / 20) ** 2 <= 1] = Tissue.MUSCLE
    section[(x / 9) ** 2 + ((y - sy - sr - 16) / 16) ** 2 <= 1] = Tissue.CORTICAL_BONE
    section[np.hypot(x, y - sy - sr - 7) <= 7] = Tissue.CANAL
    section[np.hypot(x, y - sy) <= sr] = Tissue.CORTICAL_BONE
    section[np.hypot(x, y - sy) <= sr - CORTEX_MM] = Tissue.CANCELLOUS_BONE
    aorta_x, aorta_y, aorta_r = anatomy.aorta
    section[np.hypot(x - aorta_x, y - aorta_y) <= aorta_r] = Tissue.AORTA
    return section


def _paint_ellipsoid(tissue, xs, ys, zs, centre, axes, code, allowed) -> None:
    box = bounding_box(xs, ys, zs, centre, axes)
    if box is None:
        return
    bz, by, bx = box
    rho2 = (((zs[bz] - centre[2]) / axes[2]) ** 2)[:, None, None] \
        + (((ys[by] - centre[1]) / axes[1]) ** 2)[None, :, None] \
        + (((xs[bx] - centre[0]) / axes[0]) ** 2)[None, None, :]
    sub = tissue[box]
    sub[(rho2 <= 1) & allowed[sub]] = code


def _paint_tumour(tissue, xs, ys, zs, tumour: Tumour) -> TumourPart | None:
    box = bounding_box(xs, ys, zs, tumour.centre, tumour.reach)
    if box is None:
        return None
    bz, by, bx = box
    d = (xs[bx] - tumour.centre[0])[None, None, :], (ys[by] - tumour.centre[1])[None, :, None], \
        (zs[bz] - tumour.centre[2])[:, None, None]
    rho2 = 0.0
    for axis in range(3):  # coordinates along the tumour's own (rotated) axes
        r = tumour.rotation[:, axis]
        rho2 = rho2 + ((r[0] * d[0] + r[1] * d[1] + r[2] * d[2]) / tumour.axes[axis]) ** 2
    lobes = sum(np.cos(w[0] * d[0] + w[1] * d[1] + w[2] * d[2] + p)
                for w, p in zip(tumour.lobe_waves, tumour.lobe_phases)) / len(tumour.lobe_phases)
    rho = (np.sqrt(rho2) / (1.0 + tumour.irregularity * lobes)).astype(np.float32)
    sub = tissue[box]
    inside = (rho <= 1.0) & (sub == Tissue.LIVER)
    sub[inside] = Tissue.TUMOUR
    sub[inside & (rho <= tumour.necrosis_fraction)] = Tissue.NECROSIS
    focus = None
    if tumour.focus is not None:
        f = tumour.focus.offset
        focus = ((d[0] - f[0]) ** 2 + (d[1] - f[1]) ** 2 + (d[2] - f[2]) ** 2 <= tumour.focus.radius ** 2) & inside
    return TumourPart(tumour, box, inside, rho, focus)


def _keep_strictly_inside(tissue: np.ndarray, part: TumourPart) -> None:
    """Give back to the liver any tumour voxel that touches (26-neighbourhood) something other than liver."""
    lo = [max(s.start - 1, 0) for s in part.box]
    hi = [min(s.stop + 1, n) for s, n in zip(part.box, tissue.shape)]
    padded = tuple(slice(a, b) for a, b in zip(lo, hi))
    core = ndimage.binary_erosion(LIVER_OR_TUMOUR[tissue[padded]], np.ones((3, 3, 3), bool), border_value=0)
    inner = tuple(slice(s.start - a, s.stop - a) for s, a in zip(part.box, lo))
    loose = part.inside & ~core[inner]
    if loose.any():
        tissue[part.box][loose] = Tissue.LIVER
        part.inside &= ~loose


def paint_tissues(anatomy: Anatomy, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray,
                  strict_tumours: bool = True) -> tuple[np.ndarray, list[TumourPart]]:
    """Tissue codes (uint8, shape (z, y, x)) of `anatomy` on the grid, and where each tumour landed.

    With `strict_tumours` (the CT/mask grid) every tumour voxel is surrounded by liver or tumour.
    """
    section = _cross_section(anatomy, xs, ys)
    tissue = np.broadcast_to(section, (zs.size, *section.shape)).copy()
    # Bowel versus visceral fat: a smooth random texture, separable so that it costs a few full-volume ops.
    w, phases = anatomy.viscera_waves, anatomy.viscera_phases
    planes = np.cos(w[:, 0, None, None] * xs[None, None, :] + w[:, 1, None, None] * ys[None, :, None]
                    + phases[:, 0, None, None]).astype(np.float32)                       # (k, y, x)
    profiles = np.cos(w[:, 2] * zs[:, None] + phases[:, 1]).astype(np.float32)        # (z, k)
    field = (profiles @ planes.reshape(len(w), -1)).reshape(tissue.shape)             # one BLAS pass
    tissue[(tissue == Tissue.VISCERA) & (field > VISCERAL_FAT_LEVEL)] = Tissue.VISCERAL_FAT
    # Intervertebral discs replace the vertebral body periodically along z.
    in_disc = ((zs - anatomy.disc_phase) % anatomy.disc_period) < DISC_MM
    if in_disc.any():
        body = np.hypot(xs[None, :], ys[:, None] - anatomy.spine_y) <= anatomy.spine_radius
        slab = tissue[in_disc]
        slab[:, body] = Tissue.DISC
        tissue[in_disc] = slab
    for centre, axes in zip(anatomy.lung_centres, anatomy.lung_axes):
        _paint_ellipsoid(tissue, xs, ys, zs, centre, axes, Tissue.LUNG, ABDOMINAL_SPACE)
    for centre, axes in zip(anatomy.kidney_centres, anatomy.kidney_axes):
        _paint_ellipsoid(tissue, xs, ys, zs, centre, axes, Tissue.KIDNEY, SOFT_ORGAN_SPACE)
    _paint_ellipsoid(tissue, xs, ys, zs, anatomy.spleen_centre, anatomy.spleen_axes, Tissue.SPLEEN, SOFT_ORGAN_SPACE)
    _paint_liver(tissue, anatomy, xs, ys, zs)
    parts = [part for part in (_paint_tumour(tissue, xs, ys, zs, t) for t in anatomy.tumours) if part is not None]
    if strict_tumours:
        for part in parts:
            _keep_strictly_inside(tissue, part)
    return tissue, parts


def _paint_liver(tissue, anatomy: Anatomy, xs, ys, zs) -> None:
    wobble = 1.0 + float(np.sum(anatomy.liver_wave_amps))
    box = bounding_box(xs, ys, zs, anatomy.liver_centre, anatomy.liver_axes * wobble)
    if box is None:
        return
    bz, by, bx = box
    level = liver_level(anatomy, xs[bx][None, None, :], ys[by][None, :, None], zs[bz][:, None, None])
    sub = tissue[box]
    sub[(level <= 1.0) & SOFT_ORGAN_SPACE[sub]] = Tissue.LIVER
