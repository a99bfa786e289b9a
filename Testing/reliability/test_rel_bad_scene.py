"""Bad-input matrix, Slicer scene layer (reactkd.scene on a slicer-core MRML scene): each case raises a
ReactKDError subclass with a one-line message and adds nothing to the scene."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed")

from reactkd.errors import ImageReadError, MaskError, ReactKDError  # noqa: E402

GOOD_GRAPH = {"nodes": [{"id": 0, "kind": "tumour", "label": "T1", "centroid_ras": [1.0, 2.0, 3.0],
                         "volume_ml": 1.0, "importance": 0.5},
                        {"id": 1, "kind": "liver", "label": "L1", "centroid_ras": [4.0, 5.0, 6.0],
                         "volume_ml": 9.0, "importance": 0.1}],
              "edges": [{"source": 0, "target": 1, "weight": 0.4}]}


def _graph(**changes) -> dict:
    import copy

    graph = copy.deepcopy(GOOD_GRAPH)
    for key, value in changes.items():
        if key == "node0":
            graph["nodes"][0].update(value)
        else:
            graph[key] = value
    return graph


def _image(values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((1.5, 1.5, 2.0))
    return image


def _labels(extra_value: int | None = None) -> sitk.Image:
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[1:5, 2:6, 2:6] = 1
    labels[2:4, 3:5, 3:5] = 2
    if extra_value is not None:
        labels[0, 0, 0] = extra_value
    return _image(labels)


@pytest.fixture
def scene():
    import slicer

    return slicer.vtkMRMLScene()


def _ct_node(scene):
    from reactkd.scene import add_volume

    return add_volume(scene, _image(np.full((6, 8, 8), 40.0, np.float32)), "CT")


GRAPH_CASES = {
    "graph-without-nodes": ({"edges": []}, "malformed"),
    "graph-nodes-not-a-list": (_graph(nodes=5), "malformed"),
    "graph-node-without-centroid": (_graph(node0={"centroid_ras": None}), "malformed"),
    "graph-centroid-wrong-length": (_graph(node0={"centroid_ras": [1.0, 2.0]}), "malformed"),
    "graph-centroid-not-numbers": (_graph(node0={"centroid_ras": ["a", "b", "c"]}), "malformed"),
    "graph-edge-to-unknown-node": (_graph(edges=[{"source": 0, "target": 9, "weight": 1.0}]), "malformed"),
    "graph-duplicate-node-ids": (_graph(node0={"id": 1}, edges=[]), "duplicate node ids"),
    "graph-nan-centroid": (_graph(node0={"centroid_ras": [float("nan"), 0.0, 0.0]}), "non-finite"),
    "graph-infinite-weight": (_graph(edges=[{"source": 0, "target": 1, "weight": float("inf")}]), "non-finite"),
}


@pytest.mark.parametrize("case_id", list(GRAPH_CASES))
def test_add_region_graph_refuses_malformed_graphs(case_id, scene):
    from reactkd.scene import add_region_graph

    graph, pattern = GRAPH_CASES[case_id]
    before = scene.GetNumberOfNodes()
    with pytest.raises(ReactKDError, match=pattern) as info:
        add_region_graph(scene, graph)
    assert "\n" not in str(info.value)
    assert scene.GetNumberOfNodes() == before


def test_good_graph_is_accepted(scene):
    """Counterpart of the malformed cases: the same code path accepts a well-formed graph."""
    from reactkd.scene import add_region_graph

    points, edges = add_region_graph(scene, GOOD_GRAPH)
    assert points.GetNumberOfControlPoints() == 2 and edges.GetPolyData().GetNumberOfCells() == 1


@pytest.mark.parametrize("value", [3, 255])
def test_add_segmentation_refuses_unknown_labels(scene, value):
    from reactkd.scene import add_segmentation

    ct_node = _ct_node(scene)
    before = scene.GetNumberOfNodes()
    with pytest.raises(MaskError, match=f"unknown labels \\[{value}\\]"):
        add_segmentation(scene, _labels(value), ct_node)
    assert scene.GetNumberOfNodes() == before  # the temporary label map node is removed again


def test_largest_tumour_of_a_graph_without_tumour(scene):
    from reactkd.scene import largest_tumour_centroid_ras

    with pytest.raises(MaskError, match="no tumour node"):
        largest_tumour_centroid_ras({"nodes": [GOOD_GRAPH["nodes"][1]]})


def test_module_inputs_refuse_bad_node_choices(scene):
    from reactkd.scene import add_volume
    from REACTKDLib.scene_inputs import inputs_from_nodes

    ct_node = _ct_node(scene)
    bad_labels = add_volume(scene, _labels(4), "labels", labelmap=True)
    good_labels = add_volume(scene, _labels(), "good", labelmap=True)
    with pytest.raises(ImageReadError, match="no CT volume selected"):
        inputs_from_nodes(None, labelmap_node=good_labels)
    with pytest.raises(ImageReadError, match="is a label map, not a CT volume"):
        inputs_from_nodes(good_labels, labelmap_node=good_labels)
    with pytest.raises(MaskError, match=r"has labels \[4\]"):
        inputs_from_nodes(ct_node, labelmap_node=bad_labels)
    with pytest.raises(MaskError, match="select a segmentation"):
        inputs_from_nodes(ct_node)
    assert inputs_from_nodes(ct_node, labelmap_node=good_labels)["mask"].GetSize() == (8, 8, 6)


def test_scene_bundle_refusals(scene, tmp_path):
    from reactkd.scene import load_mrb, save_mrb

    (tmp_path / "fake.mrb").write_bytes(b"not a zip archive")
    with pytest.raises(ReactKDError, match="not a zip archive"):
        load_mrb(tmp_path / "fake.mrb")
    with pytest.raises(ReactKDError, match="file not found"):
        load_mrb(tmp_path / "absent.mrb")
    with pytest.raises(ReactKDError, match="must end in .mrb"):
        save_mrb(scene, tmp_path / "scene.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mrb"]


def test_add_segmentation_leaves_no_temporary_nodes(scene):
    """The temporary label map and its display node go again (they used to stay as an orphan display node)."""
    from reactkd.scene import add_segmentation

    ct_node = _ct_node(scene)
    segmentation = add_segmentation(scene, _labels(), ct_node)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    for class_name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLLabelMapVolumeDisplayNode"):
        assert scene.GetNumberOfNodesByClass(class_name) == 0, class_name
