"""Small synthetic images with known geometry, built without the cohort generator (test helpers)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

OBLIQUE = (0.9961947, -0.0871557, 0.0, 0.0871557, 0.9961947, 0.0, 0.0, 0.0, 1.0)  # 5 degrees about z


def make_case(shape_zyx=(40, 64, 64), spacing=(1.5, 1.2, 2.5), origin=(-40.0, 25.0, 100.0),
              direction=OBLIQUE, tumour_centre_zyx=(20, 30, 36), tumour_radius=5, seed=0):
    """CT (HU), label map (liver ellipsoid with a spherical tumour) and a PET on a coarser grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx)
    cz, cy, cx = (s / 2 for s in shape_zyx)
    liver = ((z - cz) / (shape_zyx[0] * 0.35)) ** 2 + ((y - cy) / (shape_zyx[1] * 0.35)) ** 2 \
        + ((x - cx) / (shape_zyx[2] * 0.35)) ** 2 <= 1
    tz, ty, tx = tumour_centre_zyx
    tumour = (z - tz) ** 2 + (y - ty) ** 2 + (x - tx) ** 2 <= tumour_radius ** 2
    labels = np.where(liver, 1, 0).astype(np.uint8)
    labels[tumour & liver] = 2
    hu = np.full(shape_zyx, 40.0, dtype=np.float32) + rng.normal(0, 10, shape_zyx).astype(np.float32)
    hu[liver] += 20
    hu[labels == 2] += 40
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing(spacing)
    ct.SetOrigin(origin)
    ct.SetDirection(direction)
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(ct)
    pet = sitk.GetImageFromArray(np.where(labels == 2, 8.0, 2.0).astype(np.float32))
    pet.CopyInformation(ct)
    pet = sitk.Resample(pet, [s // 2 for s in ct.GetSize()], sitk.Transform(), sitk.sitkLinear, origin,
                        [2 * s for s in spacing], direction, 0.0, sitk.sitkFloat32)
    return ct, mask, pet



def regions_like(images):
    """Region-head input for a (B, C, D, H, W) batch: a liver ellipsoid (1) with a ring (2) around one tumour (3)
    in every case, as ``graph.head_region_labels`` gives it."""
    import torch

    batch, _, d, h, w = images.shape
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (d, h, w)), indexing="ij")
    radius = (z / 0.8) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2
    tumour = (z - 0.2) ** 2 + (y + 0.1) ** 2 + (x - 0.2) ** 2
    labels = torch.where(radius <= 1, 1, 0)
    labels = torch.where((tumour <= 0.12) & (radius <= 1), 2, labels)
    labels = torch.where((tumour <= 0.05) & (radius <= 1), 3, labels)
    return labels.to(torch.int16).expand(batch, d, h, w).to(images.device)
