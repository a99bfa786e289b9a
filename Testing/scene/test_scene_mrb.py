"""Scene bundles: what is saved reloads with its data; the one-call classification scene writer."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ReactKDError
from reactkd.images.geometry import Geometry

pytestmark = pytest.mark.scene


def names_of_class(scene, class_name):
    return sorted(scene.GetNthNodeByClass(i, class_name).GetName()
                  for i in range(scene.GetNumberOfNodesByClass(class_name)))


def test_mrb_round_trip_keeps_nodes_data_and_views(headless, scene_case, tmp_path):
    from reactkd.scene import (
        add_region_graph,
        add_results_table,
        add_segmentation,
        add_volume,
        load_mrb,
        save_mrb,
        segment_id_by_name,
        show_attention,
        volume_array,
        volume_geometry,
    )

    scene = headless.scene
    ct_node = add_volume(scene, scene_case.ct, "CT")
    attention_node = add_volume(scene, scene_case.attention, "attention_cbam")
    show_attention(scene, ct_node, attention_node)
    add_segmentation(scene, scene_case.labels, ct_node)
    add_region_graph(scene, scene_case.graph)
    add_results_table(scene, scene_case.result)
    path = save_mrb(scene, tmp_path / "scene.mrb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.mrb"]  # no temporaries left behind
    members = zipfile.ZipFile(path).namelist()
    for expected in ("scene/scene.mrml", "scene/Data/CT.nrrd", "scene/Data/attention_cbam.nrrd",
                     "scene/Data/REACTKD segmentation.seg.nrrd", "scene/Data/REACTKD region graph.mrk.json",
                     "scene/Data/REACTKD region graph edges.vtk", "scene/Data/REACTKD result.tsv"):
        assert expected in members

    loaded = load_mrb(path)
    try:
        other = loaded.scene
        assert other is not scene
        assert names_of_class(other, "vtkMRMLScalarVolumeNode") == ["CT", "attention_cbam"]
        ct_back = other.GetFirstNodeByName("CT")
        np.testing.assert_array_equal(volume_array(ct_back), sitk.GetArrayFromImage(scene_case.ct))
        assert volume_geometry(ct_back).same_as(Geometry.of(scene_case.ct), tol=1e-6)
        segmentation_node = other.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        assert segment_id_by_name(segmentation_node, "liver") and segment_id_by_name(segmentation_node, "tumour")
        points = other.GetFirstNodeByClass("vtkMRMLMarkupsFiducialNode")
        assert [points.GetNthControlPointLabel(i) for i in range(points.GetNumberOfControlPoints())] == \
            [node["label"] for node in scene_case.graph["nodes"]]
        edges = other.GetFirstNodeByName("REACTKD region graph edges")
        assert edges.GetPolyData().GetNumberOfLines() == len(scene_case.graph["edges"])
        assert other.GetFirstNodeByName("REACTKD result").GetTable().GetNumberOfRows() == 3
        # The heat map survives as a saved colour table and the views still show it over the CT.
        attention_back = other.GetFirstNodeByName("attention_cbam")
        table = other.GetNodeByID(attention_back.GetDisplayNode().GetColorNodeID())
        assert table.GetName() == "REACTKD Inferno" and table.GetNumberOfColors() == 256
        composite = loaded.slice_logic("Red").GetSliceCompositeNode()
        assert composite.GetForegroundVolumeID() == attention_back.GetID()
        assert composite.GetBackgroundVolumeID() == ct_back.GetID()
    finally:
        loaded.close()


def test_mrb_errors(headless, tmp_path):
    from reactkd.scene import load_mrb, save_mrb

    with pytest.raises(ReactKDError, match=".mrb"):
        save_mrb(headless.scene, tmp_path / "scene.zip")
    with pytest.raises(ReactKDError, match="not found"):
        load_mrb(tmp_path / "missing.mrb")
    (tmp_path / "junk.mrb").write_bytes(b"not a zip")
    with pytest.raises(ReactKDError, match="readable"):
        load_mrb(tmp_path / "junk.mrb", context=headless)


def test_write_classification_scene(scene_case, tmp_path):
    import vtk
    from vtk.util import numpy_support

    from reactkd.scene import write_classification_scene

    files = write_classification_scene(
        tmp_path, scene_case.ct, {"attention_cbam": scene_case.attention, "attention_gradcam": scene_case.attention},
        scene_case.labels, scene_case.graph, scene_case.result, pets={"pet_fdg": scene_case.ct}, size=(128, 96))
    assert files.overview_png == tmp_path / "overview.png" and files.scene_mrb == tmp_path / "scene.mrb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overview.png", "scene.mrb"]
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(files.overview_png))
    reader.Update()
    assert reader.GetOutput().GetDimensions()[:2] == (128, 96)
    pixels = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars()).astype(float)
    warm = (pixels[:, 0] + pixels[:, 1]) / 2 - pixels[:, 2]
    assert (warm > 25).sum() > 20  # the heat map is in the overview
    members = zipfile.ZipFile(files.scene_mrb).namelist()
    assert {"scene/Data/pet_fdg.nrrd", "scene/Data/attention_gradcam.nrrd"} <= set(members)


def test_a_truncated_bundle_is_refused_and_never_renamed_into_place(tmp_path):
    """A full disk truncates the zip; its directory at the end is lost, which the check catches."""
    import types
    import zipfile

    from reactkd.errors import ReactKDError
    from reactkd.scene import save_mrb

    def write_truncated(path):
        with zipfile.ZipFile(path, "w") as bundle:
            bundle.writestr("scene/scene.mrml", "<MRML>" + "x" * 5000 + "</MRML>")
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        return True

    target = tmp_path / "scene.mrb"
    with pytest.raises(ReactKDError, match="not written completely"):
        save_mrb(types.SimpleNamespace(WriteToMRB=write_truncated), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_truncated_png_is_refused(tmp_path, monkeypatch):
    import numpy as np

    from reactkd.errors import ReactKDError
    from reactkd.scene import render

    real = render.vtk.vtkPNGWriter

    class CuttingWriter:
        def __init__(self):
            self.inner = real()

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def Write(self):
            self.inner.Write()
            name = self.inner.GetFileName()
            data = open(name, "rb").read()
            open(name, "wb").write(data[:-20])

    monkeypatch.setattr(render.vtk, "vtkPNGWriter", CuttingWriter)
    with pytest.raises(ReactKDError, match="not written completely"):
        render.write_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
