"""overview.png and scene.mrb for `reactkd classify`, through the scene layer (needs slicer-core and GL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import SimpleITK as sitk

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
        labels = sitk.Cast(mask, sitk.sitkUInt8)
        write_classification_scene(out_dir, ct, {"attention_gradcam": result.attention_gradcam,
                                                 "attention_cbam": result.attention_cbam},
                                   labels, result.graph, result.to_json(), pets=pets, shown_attention=SHOWN_ATTENTION)
