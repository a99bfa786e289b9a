"""Colour tables the overlays use. Slicer's file-based tables (Inferno, Viridis) are absent without the
application, so a perceptual heat table is built here from matplotlib's inferno anchors."""

from __future__ import annotations

import numpy as np
import slicer

#: Inferno (matplotlib, CC0) sampled at 17 evenly spaced positions; linear interpolation between them
#: stays within ~1% of the full 256-entry map.
INFERNO_ANCHORS = np.array([
    [0.0015, 0.0005, 0.0139], [0.0423, 0.0281, 0.1411], [0.1293, 0.0473, 0.2908], [0.2383, 0.0366, 0.3964],
    [0.3415, 0.0623, 0.4294], [0.4412, 0.0993, 0.4316], [0.5409, 0.1347, 0.4151], [0.6401, 0.1714, 0.3811],
    [0.7357, 0.2159, 0.3302], [0.8224, 0.2752, 0.2661], [0.8943, 0.3534, 0.1936], [0.9470, 0.4492, 0.1153],
    [0.9784, 0.5579, 0.0349], [0.9879, 0.6753, 0.0653], [0.9746, 0.7977, 0.2063], [0.9476, 0.9174, 0.4107],
    [0.9884, 0.9984, 0.6449],
])

HEAT_TABLE_NAME = "REACTKD Inferno"
EDGE_TABLE_NAME = "REACTKD Inferno (opaque)"


def inferno_rgba(count: int = 256, transparent_below: float = 0.0, start: float = 0.0) -> np.ndarray:
    """(count, 4) RGBA in [0, 1]: inferno from position `start` to 1, with alpha 0 for entries below
    `transparent_below` and 1 otherwise (Slicer's slice views treat a table's alpha as on/off anyway)."""
    positions = np.linspace(0.0, 1.0, count)
    anchor_positions = np.linspace(0.0, 1.0, len(INFERNO_ANCHORS))
    sample = start + (1.0 - start) * positions
    rgb = np.stack([np.interp(sample, anchor_positions, INFERNO_ANCHORS[:, c]) for c in range(3)], axis=1)
    alpha = (positions >= transparent_below).astype(float)
    return np.column_stack([rgb, alpha])


def get_or_create_color_table(scene: slicer.vtkMRMLScene, name: str, rgba: np.ndarray) -> slicer.vtkMRMLColorTableNode:
    """The colour table node called `name`; created from `rgba` (N x 4 in [0, 1]) when the scene lacks it."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(rgba))
    node.GetLookupTable().SetTableRange(0, len(rgba) - 1)
    for index, (r, g, b, a) in enumerate(rgba):
        node.SetColor(index, f"{index / max(len(rgba) - 1, 1):.3f}", float(r), float(g), float(b), float(a))
    node.SetAttribute("Category", "REACTKD")
    return node


def heat_color_table(scene: slicer.vtkMRMLScene, transparent_below: float = 0.1) -> slicer.vtkMRMLColorTableNode:
    """Inferno for attention maps; values under `transparent_below` are transparent so the CT shows through.

    An existing table of that name is reused as it is."""
    return get_or_create_color_table(scene, HEAT_TABLE_NAME, inferno_rgba(transparent_below=transparent_below))


def edge_color_table(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """Opaque inferno without its near-black end, so weak edges stay visible on dark backgrounds."""
    return get_or_create_color_table(scene, EDGE_TABLE_NAME, inferno_rgba(start=0.25))
