"""Liver/tumour label maps from a DICOM SEG (how clinical cohorts such as HCC-TACE-Seg store their masks),
read with highdicom and placed on the CT grid by the SEG's own frame geometry.

The liver and tumour segments are picked by name with the rule the Slicer module uses
(`reactkd.images.masks.pick_liver_tumour`): the segment label, else its segmented property type ("Liver",
"Neoplasm"). The result is the same 0/1/2 label map `label_codes` makes from two masks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.errors import ImageReadError, MaskError
from reactkd.images.image_files import file_type_problem
from reactkd.images.masks import label_codes, pick_liver_tumour


def _segment_names(seg) -> tuple[list[int], list[str], list[str]]:
    """(segment numbers, labels, property type meanings) in the SEG's order."""
    numbers, labels, meanings = [], [], []
    for item in seg.SegmentSequence:
        numbers.append(int(item.SegmentNumber))
        labels.append(str(getattr(item, "SegmentLabel", "") or ""))
        types = getattr(item, "SegmentedPropertyTypeCodeSequence", None) or []
        meanings.append(str(getattr(types[0], "CodeMeaning", "") or "") if types else "")
    return numbers, labels, meanings


def _pick_segments(seg, where: str) -> tuple[int, int]:
    """SEG segment numbers of the liver and the tumour."""
    numbers, labels, meanings = _segment_names(seg)
    liver, tumour = pick_liver_tumour(labels)
    by_type = pick_liver_tumour(meanings)  # a label such as "Segment_1" may still carry the coded type
    liver = liver if liver is not None else by_type[0]
    tumour = tumour if tumour is not None else by_type[1]
    found = ", ".join(repr(label or meaning) for label, meaning in zip(labels, meanings)) or "none"
    if liver is None or tumour is None:
        role = "liver" if liver is None else "tumour"
        raise MaskError(f"{where}: no {role} segment among {found} (a tumour segment is named tumour, tumor, "
                        "mass, lesion or neoplasm; the liver 'liver')")
    if numbers[liver] == numbers[tumour]:
        raise MaskError(f"{where}: the liver and the tumour must be different segments")
    return numbers[liver], numbers[tumour]


def _segment_image(volume, channel: int, fractional: bool) -> sitk.Image:
    """One segment of a highdicom Volume (axes: its own index order) as a uint8 SimpleITK image in LPS."""
    array = np.asarray(volume.array[..., channel])
    mask = (array >= 0.5) if fractional else (array > 0)
    affine = np.asarray(volume.affine, dtype=float)
    # A numpy (a0, a1, a2) array is the SimpleITK index (x=a2, y=a1, z=a0); both use LPS patient coordinates.
    columns = affine[:3, :3][:, [2, 1, 0]]
    spacing = np.linalg.norm(columns, axis=0)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((columns / spacing).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


def read_dicom_seg(path: str | os.PathLike, reference: sitk.Image, name: str = "--seg") -> sitk.Image:
    """0/1/2 label map on `reference`'s grid (the CT) from the liver and tumour segments of a DICOM SEG file.

    Each segment is placed by the SEG's plane positions and orientation (frames left out because they were
    empty count as empty) and brought onto the CT grid by nearest neighbour, so a SEG on the CT's own grid gives
    back its voxels exactly. Bad input raises ImageReadError or MaskError with a one-line message.
    """
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise ImageReadError(f"{name}: reading a DICOM SEG needs highdicom (bundled with Slicer 5.12 and later; "
                             "elsewhere: pip install highdicom)") from None

    path = Path(path)
    problem = file_type_problem(path)  # the one file rule of every read: a FIFO or device would never end
    if problem == "not found":
        raise ImageReadError(f"{name}: cannot read {path} (not found)")
    if problem:
        raise ImageReadError(f"{name}: {path} is {problem}, not a regular file")
    try:
        seg = highdicom.seg.segread(path)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError) as exc:
        raise ImageReadError(f"{name}: {path} is not a readable DICOM file ({exc})") from None
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ImageReadError(f"{name}: {path} is not a DICOM SEG ({' '.join(str(exc).split())})") from None
    liver_number, tumour_number = _pick_segments(seg, f"{name} {path.name}")
    fractional = str(getattr(seg, "SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    try:
        volume = seg.get_volume(segment_numbers=[liver_number, tumour_number], combine_segments=False)
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise ImageReadError(f"{name}: {path.name} does not describe a regular 3D grid of frames "
                             f"({' '.join(str(exc).split())})") from None
    masks = []
    for channel, role in ((0, "liver"), (1, "tumour")):
        segment = sitk.Resample(_segment_image(volume, channel, fractional), reference, sitk.Transform(),
                                sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        array = sitk.GetArrayViewFromImage(segment) > 0
        if not array.any():
            raise MaskError(f"{name}: the {role} segment of {path.name} is empty where the CT is; check that the "
                            "SEG belongs to this CT")
        masks.append(array)
    labels = sitk.GetImageFromArray(label_codes(*masks))
    labels.CopyInformation(reference)
    return labels
