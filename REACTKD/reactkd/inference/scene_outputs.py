"""overview.png and scene.mrb for `reactkd classify`, through the scene layer (needs slicer-core and GL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import SimpleITK as sitk

from reactkd.images.geometry import nonzero_box
from reactkd.inference.result import ClassificationResult
from reactkd.interrupts import deferred_interrupt

SHOWN_ATTENTION = "attention_gradcam"


def write_scene_outputs(result: ClassificationResult, out_dir: Path, ct: sitk.Image, mask: sitk.Image,
                        pet_fdg: sitk.Image | None, pet_act: sitk.Image | None) -> None:
    with deferred_interrupt():  # an interrupted VTK/OpenGL start-up can crash the process: let it finish first
        try:
            from reactkd.scene import write_classification_scene
        except ImportError as exc:
            from reactkd.errors import ReactKDError

            if importlib.util.find_spec("slicer") is None:  # pip install without the [scene] extra
                raise ReactKDError(f"rendering needs slicer-core ({exc}); install reactkd[scene] or pass "
                                   "--no-render") from None
            raise ReactKDError(f"rendering could not start ({exc}); pass --no-render to skip it") from None
        pets = {name: image for name, image in (("PET FDG", pet_fdg), ("PET acetate", pet_act)) if image is not None}
        # The maps and the labels are zero outside the liver's box: only the box goes into the scene (about a
        # tenth of a full-size CT's voxels to copy, compress and import as segments).
        labels = nonzero_box(sitk.Cast(mask, sitk.sitkUInt8))
        maps = {name: nonzero_box(getattr(result, name)) for name in ("attention_gradcam", "attention_cbam")}
        write_classification_scene(out_dir, scene_ct(ct), maps, labels, result.graph, result.to_json(), pets=pets,
                                   shown_attention=SHOWN_ATTENTION)


def scene_ct(ct: sitk.Image) -> sitk.Image:
    """The CT as 16-bit integers (rounded to the HU) when its values fit: half the bytes of float32 to copy and
    compress, and what Slicer itself stores CTs as; other CTs stay as they are."""
    if ct.GetPixelID() != sitk.sitkFloat32:
        return ct
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(ct)
    if not -32768 <= stats.GetMinimum() and stats.GetMaximum() <= 32767:
        return ct
    return sitk.Cast(sitk.Round(ct), sitk.sitkInt16)
