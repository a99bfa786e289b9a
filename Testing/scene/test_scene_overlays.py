"""Overlay nodes: heat colour table, attention layers, segments, region graph, result table, centring."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import MaskError, ReactKDError

pytestmark = pytest.mark.scene


def nodes_of_class(scene, class_name):
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def test_inferno_table_is_perceptually_ordered_and_hides_low_values():
    from reactkd.scene import inferno_rgba

    rgba = inferno_rgba(256, transparent_below=0.1)
    luminance = rgba[:, :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)  # dark to bright, monotone
    assert np.all(rgba[:25, 3] == 0) and np.all(rgba[26:, 3] == 1)
    assert rgba[-1, 0] > 0.95 and rgba[-1, 2] < 0.7 and rgba[0, :3].max() < 0.05  # black -> light yellow


def test_show_attention_sets_heat_table_window_and_every_view(headless, scene_case):
    from reactkd.scene import add_volume, show_attention

    scene = headless.scene
    ct_node = add_volume(scene, scene_case.ct, "CT")
    attention_node = add_volume(scene, scene_case.attention, "attention")
    table = show_attention(scene, ct_node, attention_node, opacity=0.6)
    assert table.GetName() == "REACTKD Inferno" and scene.GetFirstNodeByName("REACTKD Inferno") is table
    display = attention_node.GetDisplayNode()
    assert display.GetColorNodeID() == table.GetID()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    composites = nodes_of_class(scene, "vtkMRMLSliceCompositeNode")
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == ct_node.GetID()
        assert composite.GetForegroundVolumeID() == attention_node.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.6)
    show_attention(scene, ct_node, attention_node)
    assert len([n for n in nodes_of_class(scene, "vtkMRMLColorTableNode") if n.GetName() == "REACTKD Inferno"]) == 1
    with pytest.raises(ValueError):
        show_attention(scene, ct_node, attention_node, opacity=1.5)


def test_segmentation_has_liver_and_tumour_with_label_voxel_counts(headless, scene_case):
    from vtk.util import numpy_support

    from reactkd.scene import add_segmentation, add_volume, segment_id_by_name

    scene = headless.scene
    ct_node = add_volume(scene, scene_case.ct, "CT")
    segmentation_node = add_segmentation(scene, scene_case.labels, ct_node)
    labels = sitk.GetArrayFromImage(scene_case.labels)
    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for name, label in (("liver", 1), ("tumour", 2)):
        segment = segmentation.GetSegment(segment_id_by_name(segmentation_node, name))
        labelmap = segment.GetRepresentation("Binary labelmap")
        voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        assert (voxels == segment.GetLabelValue()).sum() == (labels == label).sum() > 0
    tumour = segmentation.GetSegment(segment_id_by_name(segmentation_node, "Tumour"))
    assert tumour.GetColor() == pytest.approx((0.25, 0.85, 0.35))
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # temporary node removed
    with pytest.raises(MaskError):
        segment_id_by_name(segmentation_node, "spleen")


def test_segmentation_refuses_unknown_labels(headless, scene_case):
    from reactkd.scene import add_segmentation, add_volume

    ct_node = add_volume(headless.scene, scene_case.ct, "CT")
    bad = sitk.Cast(scene_case.labels, sitk.sitkUInt8) * 3
    with pytest.raises(MaskError, match="unknown labels"):
        add_segmentation(headless.scene, bad, ct_node)


def test_region_graph_points_labels_and_weighted_edges(headless, scene_case):
    from vtk.util import numpy_support

    from reactkd.scene import add_region_graph

    scene = headless.scene
    graph = scene_case.graph
    points_node, model_node = add_region_graph(scene, graph)
    assert points_node.IsA("vtkMRMLMarkupsFiducialNode")
    assert points_node.GetNumberOfControlPoints() == len(graph["nodes"])
    for index, node in enumerate(graph["nodes"]):
        assert points_node.GetNthControlPointLabel(index) == node["label"]
        np.testing.assert_allclose(points_node.GetNthControlPointPosition(index), node["centroid_ras"], atol=1e-9)
        assert points_node.GetNthControlPointDescription(index).startswith(node["kind"])
    polydata = model_node.GetPolyData()
    assert polydata.GetNumberOfLines() == len(graph["edges"])
    weights = numpy_support.vtk_to_numpy(polydata.GetCellData().GetArray("weight"))
    np.testing.assert_allclose(weights, [edge["weight"] for edge in graph["edges"]], rtol=1e-6)
    first = polydata.GetCell(0)
    np.testing.assert_allclose(polydata.GetPoint(first.GetPointId(1)), graph["nodes"][1]["centroid_ras"])
    display = model_node.GetDisplayNode()
    assert display.GetSliceDisplayMode() == display.SliceDisplayProjection
    assert display.GetVisibility2D() and display.GetVisibility3D() and display.GetScalarVisibility()
    assert display.GetActiveScalarName() == "weight"
    assert scene.GetNodeByID(display.GetColorNodeID()).GetName() == "REACTKD Inferno (opaque)"


def test_malformed_graph_is_refused(headless, scene_case):
    from reactkd.scene import add_region_graph

    graph = {"nodes": scene_case.graph["nodes"], "edges": [{"source": 0, "target": 99, "weight": 1.0}]}
    with pytest.raises(ReactKDError, match="malformed"):
        add_region_graph(headless.scene, graph)


def test_results_table_lists_classes_and_probabilities(headless, scene_case):
    from reactkd.scene import add_results_table

    table_node = add_results_table(headless.scene, scene_case.result)
    table = table_node.GetTable()
    assert table.GetNumberOfRows() == 3
    assert [table.GetColumn(0).GetValue(i) for i in range(3)] == scene_case.result["class_names"]
    probabilities = [table.GetColumnByName("probability").GetValue(i) for i in range(3)]
    assert probabilities == pytest.approx([scene_case.result["probabilities"][c] for c in scene_case.result["class_names"]])
    assert table_node.GetAttribute("REACTKD.grade") == "poor"


def test_largest_tumour_and_centring(headless, scene_case):
    from reactkd.scene import center_views_on, largest_tumour_centroid_ras

    centre = largest_tumour_centroid_ras(scene_case.graph)
    np.testing.assert_allclose(centre, scene_case.tumour_ras)  # liver node is bigger but not a tumour
    with pytest.raises(MaskError):
        largest_tumour_centroid_ras({"nodes": [n for n in scene_case.graph["nodes"] if n["kind"] != "tumour"]})
    center_views_on(headless.scene, centre)
    for slice_node in nodes_of_class(headless.scene, "vtkMRMLSliceNode"):
        slice_to_ras = slice_node.GetSliceToRAS()
        np.testing.assert_allclose([slice_to_ras.GetElement(i, 3) for i in range(3)], centre, atol=1e-6)
    crosshair = headless.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
    np.testing.assert_allclose(crosshair.GetCrosshairRAS(), centre, atol=1e-6)
