"""Overlays of a classification on a scene: attention heat map, liver/tumour segmentation, result table,
and view centring. Each function takes the scene, so it works on `slicer.mrmlScene` inside Slicer too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from reactkd.errors import MaskError
from reactkd.scene.colors import heat_color_table
from reactkd.scene.volumes import add_volume, volume_array

#: Label value -> (segment name, RGB colour). Outline colours chosen to stand out from the heat map.
SEGMENT_STYLE = {1: ("liver", (0.87, 0.51, 0.40)), 2: ("tumour", (0.25, 0.85, 0.35))}


def show_attention(scene: slicer.vtkMRMLScene, ct_node: slicer.vtkMRMLScalarVolumeNode,
                   attention_node: slicer.vtkMRMLScalarVolumeNode, opacity: float = 0.5,
                   color_table: slicer.vtkMRMLColorNode | None = None,
                   transparent_below: float = 0.1) -> slicer.vtkMRMLColorNode:
    """Show `attention_node` (values in [0, 1]) as foreground over the CT background in every slice view.

    Colours come from `color_table` or the "REACTKD Inferno" heat table (created if missing), whose
    entries below `transparent_below` are transparent so that low attention leaves the CT unchanged. The window
    is fixed to [0, 1] so colours mean the same for every case. Returns the colour table used.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    table = color_table or heat_color_table(scene, transparent_below)
    if attention_node.GetDisplayNode() is None:
        attention_node.CreateDefaultDisplayNodes()
    display = attention_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(table.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    for composite in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(ct_node.GetID())
        composite.SetForegroundVolumeID(attention_node.GetID())
        composite.SetForegroundOpacity(opacity)
    return table


def apply_ct_window(ct_node: slicer.vtkMRMLScalarVolumeNode, window: float = 400.0, level: float = 40.0) -> None:
    """Fixed CT window/level (default: abdomen soft tissue, W 400 / L 40 HU)."""
    if ct_node.GetDisplayNode() is None:
        ct_node.CreateDefaultDisplayNodes()
    display = ct_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)


def add_segmentation(scene: slicer.vtkMRMLScene, labels: sitk.Image | slicer.vtkMRMLLabelMapVolumeNode,
                     ct_node: slicer.vtkMRMLScalarVolumeNode,
                     name: str = "REACTKD segmentation") -> slicer.vtkMRMLSegmentationNode:
    """Segmentation node with "liver" (label 1) and "tumour" (label 2) segments on the CT's geometry.

    `labels` is a label map image (0 background, 1 liver, 2 tumour) or a label map volume node. Segments are
    drawn as outlines in slice views so the heat map beneath stays readable.
    """
    temporary = None
    if isinstance(labels, sitk.Image):
        temporary = labels_node = add_volume(scene, labels, f"{name} labels", labelmap=True)
    else:
        labels_node = labels
    try:
        present = np.unique(volume_array(labels_node))
        unknown = sorted(set(present.tolist()) - {0, *SEGMENT_STYLE})
        if unknown:
            raise MaskError(f"label map has unknown labels {unknown}; expected 0 background, 1 liver, 2 tumour")
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels_node,
                                                                                          segmentation_node):
            raise MaskError(f"{labels_node.GetName()}: label map could not be imported as segments")
    finally:
        if temporary is not None:  # with its display node, which RemoveNode would leave orphaned in the scene
            displays = [temporary.GetNthDisplayNode(i) for i in range(temporary.GetNumberOfDisplayNodes())]
            scene.RemoveNode(temporary)
            for display in filter(None, displays):
                scene.RemoveNode(display)
    _style_segments(segmentation_node)
    return segmentation_node


def _style_segments(segmentation_node: slicer.vtkMRMLSegmentationNode) -> None:
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segment_name, colour = SEGMENT_STYLE[segment.GetLabelValue()]
        segment.SetName(segment_name)
        segment.SetColor(*colour)
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    display.SetSliceIntersectionThickness(2)


def segment_id_by_name(segmentation_node: slicer.vtkMRMLSegmentationNode, name: str) -> str:
    """ID of the segment called `name` (case-insensitive); MaskError if there is none."""
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        if segmentation.GetNthSegment(index).GetName().lower() == name.lower():
            return segmentation.GetNthSegmentID(index)
    raise MaskError(f"{segmentation_node.GetName()}: no segment called {name!r}")


def add_results_table(scene: slicer.vtkMRMLScene, result: Mapping,
                      name: str = "REACTKD result") -> slicer.vtkMRMLTableNode:
    """Table node with one row per class: columns "class" and "probability" (order of `class_names`).

    The predicted grade is also kept as the node attribute "REACTKD.grade".
    """
    class_names: Sequence[str] = result["class_names"]
    probabilities = result["probabilities"]
    classes = vtk.vtkStringArray()
    classes.SetName("class")
    values = vtk.vtkDoubleArray()
    values.SetName("probability")
    for class_name in class_names:
        classes.InsertNextValue(str(class_name))
        values.InsertNextValue(float(probabilities[class_name]))
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = table_node.GetTable()
    table.AddColumn(classes)
    table.AddColumn(values)
    table_node.SetColumnDescription("probability", "predicted probability of the grade")
    table_node.SetAttribute("REACTKD.grade", str(result["grade"]))
    table_node.Modified()
    return table_node


def largest_tumour_centroid_ras(graph: Mapping) -> tuple[float, float, float]:
    """RAS centroid (mm) of the largest tumour node of a region graph (graph.json layout)."""
    tumours = [node for node in graph.get("nodes", []) if node.get("kind") == "tumour"]
    if not tumours:
        raise MaskError("region graph has no tumour node")
    largest = max(tumours, key=lambda node: float(node.get("volume_ml", 0.0)))
    return tuple(float(v) for v in largest["centroid_ras"])


def center_views_on(scene: slicer.vtkMRMLScene, ras_point: Sequence[float]) -> None:
    """Move every slice view so it passes through and is centred on `ras_point`; move the crosshair there."""
    r, a, s = (float(v) for v in ras_point)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    for crosshair in _nodes_of_class(scene, "vtkMRMLCrosshairNode"):
        crosshair.SetCrosshairRAS(r, a, s)


def _nodes_of_class(scene: slicer.vtkMRMLScene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]
