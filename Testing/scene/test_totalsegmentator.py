"""Segmentation hand-off to the TotalSegmentator extension, on a real MRML scene: the segment names its
Slicer extension gives (standard terminology names and raw task labels) map onto the liver and tumour
pickers, and `segment_with_totalsegmentator` merges the liver (task total) and lesion (task liver_lesions)
results into one segmentation, with a stand-in for TotalSegmentatorLogic that names segments as it does."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicer  # noqa: E402

from reactkd.scene import add_volume  # noqa: E402
from REACTKDLib.scene_inputs import find_segment_ids, inputs_from_nodes  # noqa: E402
from REACTKDLib.totalsegmentator import segment_with_totalsegmentator  # noqa: E402


@pytest.fixture(scope="module")
def case():
    from reactkd.cohort.synth import generate_case

    return generate_case(1, 2, size="small")


def add_segment(node, ct_node, segment_id, name, mask):
    node.GetSegmentation().AddEmptySegment(segment_id, name)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, ct_node)


class FakeTotalSegmentator:
    """Names segments as the extension does: ID = TotalSegmentator's label, name = the terminology's
    3dSlicerLabel when `standard_names` (its default), else the raw label."""

    def __init__(self, labels, standard_names=True, tasks=("total", "liver_lesions")):
        self.labels, self.standard_names = labels, standard_names
        self.tasks = {task: {} for task in tasks}
        self.calls = []

    def process(self, input_volume, output_segmentation, quality=None, cpu=False, task=None, subset=None):
        self.calls.append((task, quality, subset))
        produced = {"total": [("liver", "liver", self.labels >= 1)],
                    "liver_lesions": [("liver_lesions", "liver lesion", self.labels == 2)]}[task]
        for segment_id, standard, mask in produced:
            add_segment(output_segmentation, input_volume, segment_id, standard if self.standard_names else segment_id,
                        mask)


@pytest.mark.parametrize("standard_names", [True, False])
def test_totalsegmentator_result_fills_the_pickers_and_reproduces_the_labels(headless, case, standard_names):
    ct = add_volume(headless.scene, case.ct, "CT")
    labels = sitk.GetArrayFromImage(case.mask)
    fake = FakeTotalSegmentator(labels, standard_names)
    count = headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    segmentation, note = segment_with_totalsegmentator(ct, fake)
    assert note is None
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count + 1  # lesion node merged
    assert fake.calls == [("total", True, ["liver"]), ("liver_lesions", False, None)]
    assert find_segment_ids(segmentation) == ("liver", "liver_lesions")
    mask = inputs_from_nodes(ct, segmentation)["mask"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), labels)


def test_names_of_other_totalsegmentator_tasks_map_too(headless, case):
    ct = add_volume(headless.scene, case.ct, "CT")
    labels = sitk.GetArrayFromImage(case.mask)
    node = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    for segment_id, name, mask in (("spleen", "spleen", labels == 0), ("liver_vessels", "liver vessels", labels == 1),
                                   ("liver", "liver", labels >= 1), ("liver_tumor", "neoplasm", labels == 2)):
        add_segment(node, ct, segment_id, name, mask)
    assert find_segment_ids(node) == ("liver", "liver_tumor")


def test_without_the_lesion_task_the_liver_is_kept_and_the_user_told(headless, case):
    ct = add_volume(headless.scene, case.ct, "CT")
    fake = FakeTotalSegmentator(sitk.GetArrayFromImage(case.mask), tasks=("total",))
    kept, note = segment_with_totalsegmentator(ct, fake)  # returned, so the widget selects it and picks the liver
    assert "no liver lesion task" in note
    assert kept is headless.scene.GetFirstNodeByName("CT TotalSegmentator") and find_segment_ids(kept) == ("liver", None)


def test_a_failing_run_leaves_no_empty_segmentation(headless, case):
    ct = add_volume(headless.scene, case.ct, "CT")

    class Failing:
        tasks = {"total": {}, "liver_lesions": {}}

        def process(self, *args, **kwargs):
            raise RuntimeError("TotalSegmentator exited with code 1")

    before = headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(RuntimeError):
        segment_with_totalsegmentator(ct, Failing())
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before
