"""Classifier inputs from the REACTKD module's scene nodes, without Qt: pick the CT volume and the liver and
tumour segments by name, and turn the selected nodes into {"ct", "mask", "pet_fdg", "pet_act"} images.

Slicer-process code (imports only `slicer`, which slicer-core provides headless, so the tests run it on a
headless MRML scene); the logic (REACTKDLib.logic) calls it for the GUI.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from reactkd.errors import ImageReadError, MaskError
from reactkd.images.masks import label_codes, name_words, pick_liver_tumour
from reactkd.scene.volumes import volume_to_image


def find_segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode | None) -> tuple[str | None, str | None]:
    """(liver segment ID, tumour segment ID) picked by segment name (`reactkd.images.masks.pick_liver_tumour`:
    tumour, tumor, mass, lesion or neoplasm make a tumour, "liver" the liver), None where no name fits."""
    if segmentation_node is None:
        return None, None
    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetNthSegment(index).GetName() or "" for index in range(segmentation.GetNumberOfSegments())]
    liver, tumour = pick_liver_tumour(names)
    return tuple(None if index is None else segmentation.GetNthSegmentID(index) for index in (liver, tumour))


def pick_ct_volume(scene) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The scalar volume most likely to be the CT, for the CT picker's first guess: a plain one-component
    scalar volume (what the picker lists: not a label map, vector, RGB or tensor volume); a name with the word
    CT (and not PET/FDG/acetate) first, then a volume whose values reach below -200 (air in Hounsfield units; a
    PET never does), then the first volume."""
    volumes = [node for node in (scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
               # The picker shows the exact class only (showChildNodeTypes false in REACTKD.ui).
               if node.GetClassName() == "vtkMRMLScalarVolumeNode" and node.GetImageData() is not None
               and node.GetImageData().GetNumberOfScalarComponents() == 1]

    def score(node) -> tuple[int, int]:
        words = name_words(node.GetName())
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
    # The tumour wins where a liver segment also covers it (the usual way to draw them).
    image = sitk.GetImageFromArray(label_codes(liver, tumour))
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
