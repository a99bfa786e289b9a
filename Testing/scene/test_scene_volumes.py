"""Volume nodes from SimpleITK images: exact geometry (LPS -> RAS) and voxel round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import GeometryError
from reactkd.images.geometry import Geometry

pytestmark = pytest.mark.scene


def test_ijk_to_ras_matches_geometry_of_oblique_anisotropic_image(headless, scene_case):
    import vtk

    from reactkd.scene import add_volume
    from reactkd.scene.volumes import vtk_matrix_to_numpy

    node = add_volume(headless.scene, scene_case.ct, "CT")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    expected = Geometry.of(scene_case.ct).index_to_ras()
    np.testing.assert_allclose(vtk_matrix_to_numpy(matrix), expected, atol=1e-9)
    assert not np.allclose(expected[:3, :3], np.diag(np.diag(expected[:3, :3])))  # really oblique
    # A voxel's RAS position from Slicer equals ITK's physical point with L, P negated.
    index = (5, 9, 13)
    ras = np.array(matrix.MultiplyPoint([*index, 1.0])[:3])
    lps = np.array(scene_case.ct.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)


def test_arrays_round_trip_exactly(headless, scene_case):
    from reactkd.scene import add_volume, volume_array, volume_to_image

    ct_node = add_volume(headless.scene, scene_case.ct, "CT")
    label_node = add_volume(headless.scene, scene_case.labels, "labels", labelmap=True)
    assert ct_node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert label_node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    ct_array = sitk.GetArrayFromImage(scene_case.ct)
    assert volume_array(ct_node).dtype == np.float32
    np.testing.assert_array_equal(volume_array(ct_node), ct_array)
    np.testing.assert_array_equal(volume_array(label_node), sitk.GetArrayFromImage(scene_case.labels))
    back = volume_to_image(ct_node)
    assert Geometry.of(back).same_as(Geometry.of(scene_case.ct), tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), ct_array)


def test_slicer_util_helpers_work_on_the_headless_scene(headless, scene_case):
    import slicer
    import slicer.util

    from reactkd.scene import add_volume

    node = add_volume(headless.scene, scene_case.ct, "CT")
    assert slicer.mrmlScene is headless.scene
    assert slicer.util.getNode("CT") is node
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(scene_case.ct))
    assert slicer.modules.segmentations.logic() is headless.segmentations_logic


def test_volume_under_a_transform_is_refused(headless, scene_case):
    from reactkd.scene import add_volume, volume_to_image

    node = add_volume(headless.scene, scene_case.ct, "CT")
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(GeometryError, match="harden"):
        volume_to_image(node)


def test_non_3d_image_is_refused(headless):
    from reactkd.scene import add_volume

    with pytest.raises(GeometryError):
        add_volume(headless.scene, sitk.Image([4, 4], sitk.sitkFloat32), "flat")
