"""Warnings about a case the model can grade but should be trusted less on (never errors: the grade still comes).

Preprocessing already warns about intensities (a CT not in Hounsfield units, an 8-bit export, PET that misses
the liver or carries no uptake). These checks add the segmentation's side: a tumour the model grid hardly
resolves, and a liver mask whose volume or shape no liver has.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from reactkd.preprocessing import PreprocessedCase
from reactkd.vocabulary import TUMOUR_CODE

#: A tumour covering fewer model-grid voxels than this (a 2 x 2 x 2 block) is below what the grid resolves.
MIN_TUMOUR_GRID_VOXELS = 8
#: Liver (with tumours) volumes outside this range (mL) are no adult liver: adult livers hold about 1000-2000 mL
#: on CT; the range leaves room for a shrunken cirrhotic liver and for hepatomegaly with a large HCC.
LIVER_VOLUME_ML = (400.0, 4500.0)
#: A piece of the liver mask holding at least this share of it counts as a separate piece.
LIVER_PIECE_SHARE = 0.05
MAX_LIVER_PIECES = 2


def segmentation_warnings(case: PreprocessedCase, mask: np.ndarray, spacing_xyz) -> list[str]:
    """Warnings for `case` (on the model grid) and its native label map `mask` (z, y, x) of voxel spacing
    `spacing_xyz` (mm)."""
    warnings = []
    native_ml = float(np.prod(spacing_xyz)) / 1000.0
    grid_ml = float(np.prod(case.grid.spacing)) / 1000.0
    labels = case.label_map
    tumours, count = ndimage.label(labels == TUMOUR_CODE)
    sizes = np.bincount(tumours.ravel(), minlength=count + 1)[1:]
    tiny = int(np.sum(sizes < MIN_TUMOUR_GRID_VOXELS))
    if tiny:
        warnings.append(f"{tiny} of {count} tumour(s) cover fewer than {MIN_TUMOUR_GRID_VOXELS} voxels of the model "
                        f"grid ({_mm(case.grid.spacing)} mm voxels): the model hardly sees them")
    native_tumour_ml = np.count_nonzero(mask == TUMOUR_CODE) * native_ml
    if native_tumour_ml > 0 and sizes.sum() * grid_ml < 0.5 * native_tumour_ml:
        warnings.append(f"the model grid keeps {sizes.sum() * grid_ml:.1f} of the segmentation's {native_tumour_ml:.1f} "
                        "mL of tumour: small tumours are lost on it")
    liver_ml = np.count_nonzero(mask) * native_ml
    if not LIVER_VOLUME_ML[0] <= liver_ml <= LIVER_VOLUME_ML[1]:
        warnings.append(f"the liver mask holds {liver_ml:.0f} mL; an adult liver holds {LIVER_VOLUME_ML[0]:.0f} to "
                        f"{LIVER_VOLUME_ML[1]:.0f} mL: check the segmentation (and the CT's voxel spacing)")
    pieces, n_pieces = ndimage.label(labels > 0)
    piece_sizes = np.bincount(pieces.ravel(), minlength=n_pieces + 1)[1:]
    large = int(np.sum(piece_sizes >= LIVER_PIECE_SHARE * max(piece_sizes.sum(), 1)))
    if large > MAX_LIVER_PIECES:
        warnings.append(f"the liver mask falls into {large} separate pieces of at least {LIVER_PIECE_SHARE:.0%} "
                        "each; a liver is one organ: check the segmentation")
    return warnings


def _mm(spacing) -> str:
    return " x ".join(f"{s:.1f}" for s in spacing)
