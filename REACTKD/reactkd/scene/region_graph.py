"""The region graph (graph.json layout) as a labelled markups point list plus a line model of its edges."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import slicer
import vtk

from reactkd.errors import ReactKDError
from reactkd.scene.colors import edge_color_table

#: Colour of the graph's control points (cyan: distinct from the heat map and the segment outlines).
POINT_COLOR = (0.2, 0.85, 1.0)
EDGE_WEIGHT_ARRAY = "weight"


def _validated_graph(graph: Mapping) -> tuple[list[Mapping], np.ndarray, list[tuple[int, int, float]]]:
    """Nodes, their (N, 3) RAS centroids and edges as (row, row, weight), checked for consistency."""
    try:
        nodes = list(graph["nodes"])
        centroids = np.array([node["centroid_ras"] for node in nodes], dtype=float).reshape(len(nodes), 3)
        row_of = {int(node["id"]): row for row, node in enumerate(nodes)}
        edges = [(row_of[int(edge["source"])], row_of[int(edge["target"])], float(edge["weight"]))
                 for edge in graph.get("edges", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReactKDError(f"region graph is malformed ({type(exc).__name__}: {exc})") from None
    if len(row_of) != len(nodes):
        raise ReactKDError("region graph has duplicate node ids")
    if not np.isfinite(centroids).all() or not all(np.isfinite(weight) for _, _, weight in edges):
        raise ReactKDError("region graph has non-finite centroids or edge weights")
    return nodes, centroids, edges


def add_region_graph(scene: slicer.vtkMRMLScene, graph: Mapping, name: str = "REACTKD region graph"
                     ) -> tuple[slicer.vtkMRMLMarkupsFiducialNode, slicer.vtkMRMLModelNode]:
    """Add a region graph: one locked, labelled control point per graph node (description: kind, volume,
    importance) and a model of line segments, one per edge, with cell scalar "weight" coloured by the
    opaque inferno table. The lines show in 3D and, projected, in every slice view.
    """
    nodes, centroids, edges = _validated_graph(graph)
    points_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    points_node.CreateDefaultDisplayNodes()
    for node, centroid in zip(nodes, centroids):
        index = points_node.AddControlPoint(vtk.vtkVector3d(*centroid), str(node.get("label", node["id"])))
        points_node.SetNthControlPointDescription(
            index, f"{node.get('kind', '?')}; {float(node.get('volume_ml', 0.0)):.1f} ml; "
                   f"importance {float(node.get('importance', 0.0)):.3f}")
    points_node.SetLocked(True)
    points_display = points_node.GetDisplayNode()
    points_display.SetSelectedColor(*POINT_COLOR)
    points_display.SetColor(*POINT_COLOR)
    points_display.SetSliceProjection(True)  # nodes off the current slice still show, faded
    points_display.SetSliceProjectionUseFiducialColor(True)

    model_node = scene.AddNewNodeByClass("vtkMRMLModelNode", f"{name} edges")
    model_node.SetAndObservePolyData(_edge_polydata(centroids, edges))
    model_node.CreateDefaultDisplayNodes()
    _style_edges(scene, model_node, [weight for _, _, weight in edges])
    return points_node, model_node


def _edge_polydata(centroids: np.ndarray, edges: list[tuple[int, int, float]]) -> vtk.vtkPolyData:
    points = vtk.vtkPoints()
    points.SetDataTypeToDouble()
    for centroid in centroids:
        points.InsertNextPoint(*centroid)
    lines = vtk.vtkCellArray()
    weights = vtk.vtkFloatArray()
    weights.SetName(EDGE_WEIGHT_ARRAY)
    for source, target, weight in edges:
        lines.InsertNextCell(2)
        lines.InsertCellPoint(source)
        lines.InsertCellPoint(target)
        weights.InsertNextValue(weight)
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(points)
    polydata.SetLines(lines)
    polydata.GetCellData().AddArray(weights)
    polydata.GetCellData().SetActiveScalars(EDGE_WEIGHT_ARRAY)
    return polydata


def _style_edges(scene: slicer.vtkMRMLScene, model_node: slicer.vtkMRMLModelNode, weights: list[float]) -> None:
    display = model_node.GetDisplayNode()
    display.SetActiveScalar(EDGE_WEIGHT_ARRAY, vtk.vtkAssignAttribute.CELL_DATA)
    display.SetAndObserveColorNodeID(edge_color_table(scene).GetID())
    display.SetScalarVisibility(True)
    display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
    display.SetScalarRange(min(0.0, *weights) if weights else 0.0, max([1e-6, *weights]))
    display.SetLineWidth(3)
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    # Lines lying in the slice plane are invisible in intersection mode; projection draws them all.
    display.SetSliceDisplayModeToProjection()
    display.SetSliceIntersectionThickness(3)
