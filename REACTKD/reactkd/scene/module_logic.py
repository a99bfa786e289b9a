"""What the REACTKD module does with MRML nodes, without Qt: find the liver and tumour segments, turn the
selected nodes into classifier inputs, and show a classification as nodes next to the CT (and take it away).

The GUI (REACTKD.py) calls only these functions for scene work, so the tests exercise the same code on a
headless scene from slicer-core. Building blocks (volumes, heat map, table, region graph, view centring)
come from the rest of `reactkd.scene`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from reactkd.atomic import write_text_atomic
from reactkd.errors import ImageReadError, MaskError
from reactkd.scene.overlays import (
    add_results_table,
    center_views_on,
    largest_tumour_centroid_ras,
    show_attention,
)
from reactkd.scene.region_graph import add_region_graph
from reactkd.scene.volumes import add_volume, volume_to_image

LIVER_WORDS = frozenset({"liver"})
TUMOUR_WORDS = frozenset({"tumour", "tumor", "mass", "lesion", "tumours", "tumors", "masses", "lesions",
                          "neoplasm", "neoplasms"})  # TotalSegmentator's standard names: "liver lesion", "neoplasm"
#: Attention kind shown in the GUI -> attribute of ClassificationResult holding the map.
ATTENTION_KINDS = {"CBAM": "attention_cbam", "Grad-CAM": "attention_gradcam"}
RESULT_ATTRIBUTE = "REACTKD.result"


# ------------------------------------------------------------------------------------------------ inputs
def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


def _name_words(name: str) -> set[str]:
    return {word for word in re.split(r"[^a-z]+", name.lower()) if word}


def find_segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode | None) -> tuple[str | None, str | None]:
    """(liver segment ID, tumour segment ID) picked by segment name, None where no name fits.

    A segment is a tumour when a word of its name is tumour, tumor, mass, lesion or neoplasm (singular or plural),
    so "Liver tumor 1" is a tumour; it is the liver when a word is "liver" and it is not a tumour. An exact
    name ("liver", "tumour") beats a longer one; among equals the first segment wins.
    """
    if segmentation_node is None:
        return None, None
    segmentation = segmentation_node.GetSegmentation()
    liver: list[tuple[int, int, str]] = []
    tumour: list[tuple[int, int, str]] = []
    for index in range(segmentation.GetNumberOfSegments()):
        name = segmentation.GetNthSegment(index).GetName() or ""
        words = _name_words(name)
        exact = 0 if name.strip().lower() in LIVER_WORDS | TUMOUR_WORDS else 1
        candidate = (exact, index, segmentation.GetNthSegmentID(index))
        if words & TUMOUR_WORDS:
            tumour.append(candidate)
        elif words & LIVER_WORDS:
            liver.append(candidate)
    return (min(liver)[2] if liver else None), (min(tumour)[2] if tumour else None)


def pick_ct_volume(scene) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The scalar volume most likely to be the CT, for the CT picker's first guess: not a label map; a
    name with the word CT (and not PET/FDG/acetate) first, then a volume whose values reach below -200 (air in
    Hounsfield units; a PET never does), then the first volume."""
    volumes = [node for node in (scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
               if not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetImageData() is not None]

    def score(node) -> tuple[int, int]:
        words = _name_words(node.GetName())
        named = int("ct" in words and not words & {"pet", "fdg", "acetate", "act", "suv"})
        return named, int(node.GetImageData().GetScalarRange()[0] < -200)

    return max(volumes, key=score) if volumes else None  # max keeps the first among equals


def _segment_mask(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str, role: str,
                  ct_node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Boolean (z, y, x) mask of one segment resampled onto the CT grid (through any transforms between the
    two), without adding a single node to the user's scene."""
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise MaskError(f"segmentation {segmentation_node.GetName()!r} has no segment with ID {segment_id!r} "
                        f"(pick the {role} segment again)")
    binary = slicer.vtkOrientedImageData()
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segment_id, binary):
        raise MaskError(f"{role} segment {segment.GetName()!r} has no labelmap to read")
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(ct_node.GetImageData().GetExtent())
    ijk_to_ras = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(ijk_to_ras)
    reference.SetImageToWorldMatrix(ijk_to_ras)
    # The labelmap comes in world coordinates (the segmentation's transforms applied); the CT grid is in its
    # own node's frame.
    to_ct = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, ct_node.GetParentTransformNode(), to_ct)
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            binary, reference, resampled, False, False, to_ct):
        raise MaskError(f"{role} segment {segment.GetName()!r} could not be resampled onto the CT grid")
    from vtk.util.numpy_support import vtk_to_numpy

    # The resampled image may cover only part of the CT's extent: place it by its extent.
    x0, x1, y0, y1, z0, z1 = ct_node.GetImageData().GetExtent()
    mask = np.zeros((z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
    scalars = resampled.GetPointData().GetScalars()
    if scalars is not None and scalars.GetNumberOfTuples():
        e = resampled.GetExtent()
        # Segments may share one labelmap layer: this one is its own label value there.
        part = vtk_to_numpy(scalars).reshape((e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)) == \
            segment.GetLabelValue()
        zs, ys, xs = (slice(max(lo, low), min(hi, high) + 1) for lo, hi, low, high in
                      ((e[4], e[5], z0, z1), (e[2], e[3], y0, y1), (e[0], e[1], x0, x1)))
        mask[zs.start - z0:zs.stop - z0, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = \
            part[zs.start - e[4]:zs.stop - e[4], ys.start - e[2]:ys.stop - e[2], xs.start - e[0]:xs.stop - e[0]]
    if not mask.any():
        raise MaskError(f"{role} segment {segment.GetName()!r} is empty where the CT is; check that the "
                        "segmentation belongs to this CT")
    return mask


def _labels_from_segments(ct_node, ct_image: sitk.Image, segmentation_node, liver_segment_id: str | None,
                          tumour_segment_id: str | None) -> sitk.Image:
    auto_liver, auto_tumour = find_segment_ids(segmentation_node)
    liver_segment_id = liver_segment_id or auto_liver
    tumour_segment_id = tumour_segment_id or auto_tumour
    name = segmentation_node.GetName()
    if not liver_segment_id:
        raise MaskError(f"segmentation {name!r} has no liver segment: name one 'liver' or pick it as Liver")
    if not tumour_segment_id:
        raise MaskError(f"segmentation {name!r} has no tumour segment: name one tumour, tumor, mass, lesion or neoplasm, "
                        "or pick it as Tumour")
    if liver_segment_id == tumour_segment_id:
        raise MaskError("the liver and the tumour must be different segments")
    liver = _segment_mask(segmentation_node, liver_segment_id, "liver", ct_node)
    tumour = _segment_mask(segmentation_node, tumour_segment_id, "tumour", ct_node)
    labels = liver.astype(np.uint8)
    labels[tumour] = 2  # the tumour wins where a liver segment also covers it (the usual way to draw them)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct_image)
    return image


def _labels_from_labelmap(labelmap_node, ct_image: sitk.Image) -> sitk.Image:
    labels = volume_to_image(labelmap_node)
    values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    unknown = sorted(values - {0, 1, 2})
    if unknown:
        raise MaskError(f"label map {labelmap_node.GetName()!r} has labels {unknown}; expected 0 background, "
                        "1 liver, 2 tumour")
    # Nearest neighbour keeps the labels; a label map on another grid is brought onto the CT's.
    labels = sitk.Resample(labels, ct_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8)
    present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    for value, role in ((1, "liver (1)"), (2, "tumour (2)")):
        if value not in present:
            raise MaskError(f"label map {labelmap_node.GetName()!r} has no {role} voxels inside the CT")
    return labels


def inputs_from_nodes(ct_node, segmentation_node=None, liver_segment_id: str | None = None,
                      tumour_segment_id: str | None = None, labelmap_node=None, pet_fdg_node=None,
                      pet_act_node=None) -> dict[str, sitk.Image | None]:
    """Classifier inputs from scene nodes: {"ct", "mask", "pet_fdg", "pet_act"} (PETs None when absent).

    The mask is a 0/1/2 label map on the CT grid, from the liver and tumour segments of `segmentation_node`
    (IDs picked by name when not given) or from `labelmap_node` (resampled onto the CT grid). PETs keep
    their own grids (the classifier resamples them). Bad input raises ReactKDError with a one-line message.
    """
    if ct_node is None:
        raise ImageReadError("no CT volume selected")
    if ct_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ImageReadError(f"{ct_node.GetName()!r} is a label map, not a CT volume")
    if ct_node.GetImageData() is None:
        raise ImageReadError(f"CT volume {ct_node.GetName()!r} has no image data")
    if segmentation_node is not None and labelmap_node is not None:
        raise MaskError("select either a segmentation or a label map, not both")
    if segmentation_node is None and labelmap_node is None:
        raise MaskError("select a segmentation with liver and tumour segments, or a liver/tumour label map")
    ct = volume_to_image(ct_node)
    if segmentation_node is not None:
        mask = _labels_from_segments(ct_node, ct, segmentation_node, liver_segment_id, tumour_segment_id)
    else:
        mask = _labels_from_labelmap(labelmap_node, ct)
    pets = {name: (volume_to_image(node) if node is not None else None)
            for name, node in (("pet_fdg", pet_fdg_node), ("pet_act", pet_act_node))}
    return {"ct": ct, "mask": mask, **pets}


# -------------------------------------------------------------------------------------- TotalSegmentator
#: TotalSegmentator tasks (its Slicer extension) that give the liver, and the liver tumours (added 2026-03).
TOTALSEG_LIVER_TASK, TOTALSEG_LIVER_SUBSET, TOTALSEG_TUMOUR_TASK = "total", ["liver"], "liver_lesions"
TOTALSEG_MISSING = ("Segmentation by TotalSegmentator needs its extension: install TotalSegmentator from the "
                    "Extensions Manager (it brings PyTorch and NNUNet), restart Slicer, then try again. Or draw the "
                    "liver and tumour in Segment Editor.")


def segment_with_totalsegmentator(ct_node, totalseg_logic, cpu: bool = False) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation of `ct_node` with TotalSegmentator's liver (task "total", liver only, fast) and its
    liver lesions (task "liver_lesions") as segments, ready for `find_segment_ids`.

    `totalseg_logic` is a TotalSegmentatorLogic (its requirements already set up). Its `process` blocks while it
    runs. The lesion task's own node is merged and removed. If that TotalSegmentator lacks the lesion task, the
    liver segmentation is kept and MaskError says how to add the tumour.
    """
    scene = ct_node.GetScene()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{ct_node.GetName()} TotalSegmentator")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    try:
        # quality as the third positional argument: a bool before TotalSegmentator's 2026 update, "fast" after.
        totalseg_logic.process(ct_node, segmentation, True, cpu=cpu, task=TOTALSEG_LIVER_TASK,
                               subset=TOTALSEG_LIVER_SUBSET)
    except BaseException:
        scene.RemoveNode(segmentation)
        raise
    if TOTALSEG_TUMOUR_TASK not in getattr(totalseg_logic, "tasks", {}):
        raise MaskError("this TotalSegmentator has no liver lesion task (update the extension: it came with "
                        "TotalSegmentator 2.13); the liver is segmented, draw the tumour in Segment Editor")
    lesions = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__REACTKD_lesions__")
    try:
        totalseg_logic.process(ct_node, lesions, False, cpu=cpu, task=TOTALSEG_TUMOUR_TASK)
        source = lesions.GetSegmentation()
        for index in range(source.GetNumberOfSegments()):
            segmentation.GetSegmentation().CopySegmentFromSegmentation(source, source.GetNthSegmentID(index))
    finally:
        scene.RemoveNode(lesions)
    return segmentation


# ----------------------------------------------------------------------------------------------- results
@dataclass
class ResultNodes:
    """The nodes one classification added to the scene, and what it changed, so it can be undone."""

    ct_node: slicer.vtkMRMLScalarVolumeNode
    attention: dict[str, slicer.vtkMRMLScalarVolumeNode] = field(default_factory=dict)
    table: slicer.vtkMRMLTableNode | None = None
    chart: slicer.vtkMRMLPlotChartNode | None = None
    series: slicer.vtkMRMLPlotSeriesNode | None = None
    graph_points: slicer.vtkMRMLMarkupsFiducialNode | None = None
    graph_edges: slicer.vtkMRMLModelNode | None = None
    #: (composite node, background ID, foreground ID, foreground opacity) before the heat map was shown.
    previous_views: list[tuple] = field(default_factory=list)
    #: (segmentation display node, 2D fill visibility) before the fill was turned off.
    previous_fill: tuple | None = None
    centre_ras: tuple[float, float, float] | None = None

    def nodes(self) -> list:
        """Every data node added (display and storage nodes go with them)."""
        extra = [self.table, self.series, self.chart, self.graph_points, self.graph_edges]
        return [*self.attention.values(), *(node for node in extra if node is not None)]


def _reactkd_color_tables(scene) -> list:
    """The heat and edge colour tables the scene layer made (category "REACTKD"), shared by all results."""
    tables = [scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
              for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))]
    return [table for table in tables if table.GetAttribute("Category") == "REACTKD"]


def _composite_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def _place_next_to(scene, node, reference_node) -> None:
    """Put `node` in the subject hierarchy folder that holds `reference_node` (the scene root if none)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        reference_item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), reference_node)
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def _add_bar_chart(scene, table_node, name: str) -> tuple:
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} probabilities")
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
    series.SetLabelColumnName("class")
    series.SetYColumnName("probability")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(f"{name}: grade probabilities")
    chart.SetYAxisTitle("probability")
    chart.SetYAxisRangeAuto(False)
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetLegendVisibility(False)
    return series, chart


def _result_dict(result) -> Mapping:
    return result.to_json() if hasattr(result, "to_json") else result


def apply_result(scene, ct_node, result, segmentation_node=None, show: str = "CBAM", opacity: float = 0.5,
                 show_graph: bool = True) -> ResultNodes:
    """Show a ClassificationResult on `scene`: both attention maps as volumes (`show` one as the heat-map
    foreground at `opacity`), the probabilities as a table and a bar chart, the region graph as labelled
    points and weighted lines; all placed beside the CT in the subject hierarchy; views centred on the
    largest tumour. A segmentation given is drawn as outlines so the heat map stays readable.

    Nothing stays behind if this fails half-way. Undo with `remove_result`.
    """
    if show not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {show!r}; use one of {list(ATTENTION_KINDS)}")
    nodes = ResultNodes(ct_node=ct_node)
    nodes.previous_views = [(c, c.GetBackgroundVolumeID(), c.GetForegroundVolumeID(), c.GetForegroundOpacity())
                            for c in _composite_nodes(scene)]
    base = f"{ct_node.GetName()} REACTKD"
    try:
        for kind, attribute in ATTENTION_KINDS.items():
            nodes.attention[kind] = add_volume(scene, getattr(result, attribute), f"{base} attention {kind}")
        summary = _result_dict(result)
        nodes.table = add_results_table(scene, summary, name=f"{base} result")
        nodes.series, nodes.chart = _add_bar_chart(scene, nodes.table, base)
        nodes.graph_points, nodes.graph_edges = add_region_graph(scene, result.graph, name=f"{base} region graph")
        for node in nodes.nodes():
            node.SetAttribute(RESULT_ATTRIBUTE, base)
            _place_next_to(scene, node, ct_node)
        set_attention_display(scene, nodes, show, opacity)
        set_graph_visible(nodes, show_graph)
        if segmentation_node is not None and segmentation_node.GetDisplayNode() is not None:
            display = segmentation_node.GetDisplayNode()
            nodes.previous_fill = (display, display.GetVisibility2DFill())
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
        nodes.centre_ras = largest_tumour_centroid_ras(result.graph)
        center_views_on(scene, nodes.centre_ras)
    except BaseException:
        remove_result(scene, nodes)
        raise
    return nodes


def set_attention_display(scene, nodes: ResultNodes, kind: str = "CBAM", opacity: float = 0.5) -> None:
    """Show the `kind` attention map ("CBAM" or "Grad-CAM") as heat-map foreground at `opacity` (0..1)."""
    if kind not in nodes.attention:
        raise ValueError(f"unknown attention kind {kind!r}; use one of {list(nodes.attention)}")
    show_attention(scene, nodes.ct_node, nodes.attention[kind], opacity=float(opacity))


def set_graph_visible(nodes: ResultNodes, visible: bool) -> None:
    """Show or hide the region graph (points and lines) in slice and 3D views."""
    for node in (nodes.graph_points, nodes.graph_edges):
        if node is not None and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetVisibility(bool(visible))


def remove_result(scene, nodes: ResultNodes | None) -> None:
    """Remove what `apply_result` added and restore the views and segmentation display it changed.

    The REACTKD colour tables go too once no node uses them any more."""
    if nodes is None:
        return
    ours = {node.GetID() for node in nodes.attention.values() if node is not None and node.GetScene() is scene}

    def existing(node_id):  # a layer shown before may be gone since (e.g. an earlier result's map)
        return node_id if node_id and scene.GetNodeByID(node_id) is not None else None

    for composite, background, foreground, opacity in nodes.previous_views:
        if composite.GetScene() is scene and composite.GetForegroundVolumeID() in ours:
            composite.SetBackgroundVolumeID(existing(background))
            composite.SetForegroundVolumeID(existing(foreground))
            composite.SetForegroundOpacity(opacity)
    if nodes.previous_fill is not None:
        display, fill = nodes.previous_fill
        if display.GetScene() is scene:
            display.SetVisibility2DFill(fill)
    for node in nodes.nodes():
        if node.GetScene() is scene:
            _remove_with_helpers(scene, node)
    for table in _reactkd_color_tables(scene):
        if not _is_referenced(scene, table):  # the last result using it is gone
            scene.RemoveNode(table)
    nodes.attention.clear()
    nodes.table = nodes.series = nodes.chart = nodes.graph_points = nodes.graph_edges = None


def _remove_with_helpers(scene, node) -> None:
    """Remove a data node with its subject hierarchy item, display and storage nodes (outside the Slicer
    application nothing else removes them)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.RemoveItem(item, False, False)  # keep the data node for now, and nothing below it
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def _is_referenced(scene, node) -> bool:
    """True when another node in `scene` references `node` (e.g. a display node uses a colour table)."""
    node_id = node.GetID()
    for index in range(scene.GetNumberOfNodeReferences()):
        if scene.GetNthReferencedID(index) == node_id:
            referencing = scene.GetNthReferencingNode(index)
            if referencing is not None and referencing.GetScene() is scene:
                return True
    return False


def write_result_files(result, path: str | os.PathLike) -> list[Path]:
    """Write the result summary to `path` (the `result.json` layout of `reactkd classify`) and the region
    graph beside it as `<stem>.graph.json`; both atomically. Returns the two paths."""
    path = Path(path)
    graph_path = path.with_name(f"{path.stem}.graph.json")
    write_text_atomic(path, json.dumps(_result_dict(result), indent=2) + "\n")
    write_text_atomic(graph_path, json.dumps(result.graph, indent=2) + "\n")
    return [path, graph_path]
