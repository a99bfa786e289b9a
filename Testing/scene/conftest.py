"""Synthetic case for the scene tests: oblique, anisotropic CT with a liver and a tumour, an attention map
peaked at the tumour, a label map, a region graph in RAS and a result dict. Plain data, no model.

Also makes the REACTKD module folder importable (Slicer puts it on sys.path itself), for the module's
Slicer-side scene code in REACTKDLib (scene_inputs, result_nodes, totalsegmentator, sample_data, first_use)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed")

MODULE_DIR = Path(__file__).resolve().parents[2] / "REACTKD"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

SIZE_XYZ = (64, 64, 32)
SPACING = (0.9, 0.8, 2.5)
ORIGIN = (-30.0, 20.0, 50.0)
TUMOUR_INDEX = (40.0, 24.0, 16.0)  # continuous index (x, y, z) of the tumour centre
TUMOUR_RADIUS_MM = 7.0
LIVER_INDEX = (30.0, 32.0, 16.0)
LIVER_RADII_MM = (22.0, 20.0, 30.0)


def oblique_direction(about_z_deg: float = 12.0, about_x_deg: float = 8.0) -> tuple[float, ...]:
    cz, sz = math.cos(math.radians(about_z_deg)), math.sin(math.radians(about_z_deg))
    cx, sx = math.cos(math.radians(about_x_deg)), math.sin(math.radians(about_x_deg))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return tuple((rz @ rx).ravel())


def lps_to_ras(point) -> np.ndarray:
    return np.asarray(point, dtype=float) * np.array([-1.0, -1.0, 1.0])


@dataclass
class SceneCase:
    ct: sitk.Image
    attention: sitk.Image
    labels: sitk.Image
    graph: dict
    result: dict
    tumour_ras: np.ndarray
    far_liver_ras: np.ndarray  # inside the liver, away from the tumour (attention ~ 0 there)


def make_scene_case() -> SceneCase:
    reference = sitk.Image(SIZE_XYZ, sitk.sitkFloat32)
    reference.SetSpacing(SPACING)
    reference.SetOrigin(ORIGIN)
    reference.SetDirection(oblique_direction())
    z, y, x = np.indices(SIZE_XYZ[::-1], dtype=float)

    def distance_mm(centre_index, radii=(1.0, 1.0, 1.0)):
        # Distances along the index axes in mm (the grid is orthonormal after scaling by spacing).
        return np.sqrt(sum(((coord - c) * s / r) ** 2 for coord, c, s, r in
                           zip((x, y, z), centre_index, SPACING, radii)))

    tumour = distance_mm(TUMOUR_INDEX) <= TUMOUR_RADIUS_MM
    liver = distance_mm(LIVER_INDEX, LIVER_RADII_MM) <= 1.0
    labels = np.zeros(x.shape, np.uint8)
    labels[liver] = 1
    labels[tumour] = 2
    hu = np.full(x.shape, 0.0, np.float32)
    hu[liver] = 60.0
    hu[tumour] = 110.0
    attention = np.exp(-0.5 * (distance_mm(TUMOUR_INDEX) / 6.0) ** 2).astype(np.float32)

    def image(array):
        result = sitk.GetImageFromArray(array)
        result.CopyInformation(reference)
        return result

    def ras_of(index):
        return lps_to_ras(reference.TransformContinuousIndexToPhysicalPoint(index))

    tumour_ras = ras_of(TUMOUR_INDEX)
    far_liver_ras = ras_of((18.0, 40.0, 16.0))
    nodes = [
        {"id": 0, "kind": "tumour", "label": "T1", "centroid_ras": tumour_ras.tolist(), "volume_ml": 1.4, "importance": 0.9},
        {"id": 1, "kind": "ring", "label": "T1 ring", "centroid_ras": (tumour_ras + [3.0, 2.0, 0.0]).tolist(), "volume_ml": 2.0, "importance": 0.6},
        {"id": 2, "kind": "liver", "label": "liver", "centroid_ras": far_liver_ras.tolist(), "volume_ml": 40.0, "importance": 0.2},
        {"id": 3, "kind": "tumour", "label": "T2", "centroid_ras": (far_liver_ras + [0.0, -8.0, 5.0]).tolist(), "volume_ml": 0.3, "importance": 0.4},
        {"id": 4, "kind": "ring", "label": "T2 ring", "centroid_ras": (far_liver_ras + [2.0, -9.0, 5.0]).tolist(), "volume_ml": 0.5, "importance": 0.3},
    ]
    edges = [{"source": 0, "target": 1, "weight": 0.9}, {"source": 0, "target": 2, "weight": 0.5},
             {"source": 2, "target": 3, "weight": 0.3}, {"source": 3, "target": 4, "weight": 0.7},
             {"source": 1, "target": 2, "weight": 0.1}]
    result = {"grade": "poor", "class_index": 2, "class_names": ["well", "moderate", "poor"],
              "probabilities": {"well": 0.1, "moderate": 0.25, "poor": 0.65}}
    return SceneCase(image(hu), image(attention), image(labels), {"nodes": nodes, "edges": edges}, result,
                     tumour_ras, far_liver_ras)


@pytest.fixture(scope="session")
def scene_case() -> SceneCase:
    return make_scene_case()


@pytest.fixture
def headless():
    from reactkd.scene import create_headless_scene

    context = create_headless_scene()
    yield context
    context.close()
