"""A classification shown as MRML nodes next to the CT, without Qt: attention maps as heat-map volumes, the
probabilities as a table and bar chart, the region graph as points and lines; the display switches; and
taking it all away again (views and segmentation display restored). Also the result's export files.

Slicer-process code (imports only `slicer`, which slicer-core provides headless); the logic
(REACTKDLib.logic) calls it for the GUI. Building blocks come from `reactkd.scene`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from reactkd.scene.overlays import (
    add_results_table,
    center_views_on,
    largest_tumour_centroid_ras,
    show_attention,
)
from reactkd.scene.region_graph import add_region_graph
from reactkd.scene.volumes import add_volume

#: Attention kind shown in the GUI -> attribute of ClassificationResult holding the map.
ATTENTION_KINDS = {"CBAM": "attention_cbam", "Grad-CAM": "attention_gradcam"}
RESULT_ATTRIBUTE = "REACTKD.result"


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
    """Write the result summary to `path` (the `result.json` layout of `reactkd classify`, by its one writer
    `reactkd.inference.outputs.write_result_json`) and the region graph beside it as `<stem>.graph.json`; both
    atomically.

    Args:
        result: a ClassificationResult (or its summary mapping with a ``graph`` attribute).
        path: where the summary goes; the graph goes beside it.

    Returns:
        The two paths written.
    """
    from reactkd.inference.outputs import write_graph_json, write_result_json

    path = Path(path)
    graph_path = path.with_name(f"{path.stem}.graph.json")
    write_result_json(result, path)
    write_graph_json(result.graph, graph_path)
    return [path, graph_path]
