"""Segmentation by the TotalSegmentator extension for the REACTKD module: the liver (task "total") and the
liver lesions (task "liver_lesions") merged into one segmentation whose segment names the pickers of
`REACTKDLib.scene_inputs.find_segment_ids` recognise. Imports only `slicer` (headless-testable).
"""

from __future__ import annotations

import slicer

#: TotalSegmentator tasks (its Slicer extension) that give the liver, and the liver tumours.
TOTALSEG_LIVER_TASK, TOTALSEG_LIVER_SUBSET, TOTALSEG_TUMOUR_TASK = "total", ["liver"], "liver_lesions"
TOTALSEG_MISSING = ("Segmentation by TotalSegmentator needs its extension: install TotalSegmentator from the "
                    "Extensions Manager (it brings PyTorch and NNUNet), restart Slicer, then try again. Or draw the "
                    "liver and tumour in Segment Editor.")
NO_LESION_TASK = ("This TotalSegmentator has no liver lesion task (update the extension: it came with "
                  "TotalSegmentator 2.13). The liver is segmented and selected; draw the tumour in Segment Editor.")


def segment_with_totalsegmentator(ct_node, totalseg_logic,
                                  cpu: bool = False) -> tuple[slicer.vtkMRMLSegmentationNode, str | None]:
    """(segmentation, note): a new segmentation of `ct_node` with TotalSegmentator's liver (task "total", liver
    only, fast) and its liver lesions (task "liver_lesions") as segments, ready for `find_segment_ids`.

    `totalseg_logic` is a TotalSegmentatorLogic (its requirements already set up). Its `process` blocks while it
    runs. The lesion task's own node is merged and removed. If that TotalSegmentator lacks the lesion task, the
    liver-only segmentation is returned with a note saying how to add the tumour (the widget still selects it,
    so the liver is picked); the note is None otherwise.
    """
    scene = ct_node.GetScene()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{ct_node.GetName()} TotalSegmentator")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    try:
        # quality as the third positional argument: a bool in older TotalSegmentator releases, "fast" in newer ones.
        totalseg_logic.process(ct_node, segmentation, True, cpu=cpu, task=TOTALSEG_LIVER_TASK,
                               subset=TOTALSEG_LIVER_SUBSET)
    except BaseException:
        scene.RemoveNode(segmentation)
        raise
    if TOTALSEG_TUMOUR_TASK not in getattr(totalseg_logic, "tasks", {}):
        return segmentation, NO_LESION_TASK
    lesions = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__REACTKD_lesions__")
    try:
        totalseg_logic.process(ct_node, lesions, False, cpu=cpu, task=TOTALSEG_TUMOUR_TASK)
        source = lesions.GetSegmentation()
        for index in range(source.GetNumberOfSegments()):
            segmentation.GetSegmentation().CopySegmentFromSegmentation(source, source.GetNthSegmentID(index))
    finally:
        scene.RemoveNode(lesions)
    return segmentation, None
