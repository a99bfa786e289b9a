"""Write the `reactkd classify` outputs into a folder without ever leaving a half-written set.

Everything goes into a hidden staging folder beside the target first; the files are moved into place only
when all of them were written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import SimpleITK as sitk

from ..atomic import write_text_atomic
from ..errors import ReactKDError
from ..io import read_image, write_image
from .classifier import ClassificationResult

OUTPUT_FILES = ("result.json", "attention_cbam.nrrd", "attention_gradcam.nrrd", "graph.json", "overview.png",
                "scene.mrb")


def write_outputs(result: ClassificationResult, out_dir: str | Path, ct: sitk.Image, mask: sitk.Image,
                  pet_fdg: sitk.Image | None = None, pet_act: sitk.Image | None = None,
                  render: bool = True) -> dict[str, Path]:
    """Write result.json, the two attention maps, graph.json and (if render) overview.png and scene.mrb."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".reactkd-out-", dir=out_dir))
    try:
        # Level 1: the maps are zero outside the liver box, so it compresses almost as well as the default, 1.5x faster.
        write_image(result.attention_cbam, staging / "attention_cbam.nrrd", level=1)
        write_image(result.attention_gradcam, staging / "attention_gradcam.nrrd", level=1)
        write_text_atomic(staging / "graph.json", json.dumps(result.graph, indent=1) + "\n")
        if render:
            import time

            from .scene_outputs import write_scene_outputs

            start = time.perf_counter()
            write_scene_outputs(result, staging, ct, mask, pet_fdg, pet_act)
            result.timings_ms["render_and_scene"] = round((time.perf_counter() - start) * 1000, 1)
        write_text_atomic(staging / "result.json", json.dumps(result.to_json(), indent=1) + "\n")
        written = {}
        for name in OUTPUT_FILES:
            if (staging / name).exists():
                (staging / name).replace(out_dir / name)
                written[name] = out_dir / name
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_outputs(out_dir: str | Path) -> ClassificationResult:
    """The ClassificationResult a `write_outputs` folder holds (result.json, both maps, graph.json): how the
    Slicer module receives what its inference process computed."""
    out_dir = Path(out_dir)
    try:
        summary = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
        graph = json.loads((out_dir / "graph.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReactKDError(f"classification outputs in {out_dir} are unreadable ({exc})") from None
    return ClassificationResult.from_json(summary, read_image(out_dir / "attention_cbam.nrrd", name="CBAM map"),
                                          read_image(out_dir / "attention_gradcam.nrrd", name="Grad-CAM map"), graph)
