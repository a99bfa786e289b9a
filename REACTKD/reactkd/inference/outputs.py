"""Write the `reactkd classify` outputs into a folder without ever leaving a half-written or mixed set.

The run holds the folder's lock; everything goes into a hidden staging folder beside the target first; the
files are moved into place only when all of them were written, `result.json` (the mark of a complete set)
last, and outputs of an earlier run that this one does not write (overview.png and scene.mrb after a
--no-render run) are removed, so a folder never shows one patient's maps beside another's scene.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.atomic import folder_lock, remove_stale_staging, staging_prefix, write_text_atomic
from reactkd.errors import ReactKDError
from reactkd.images.geometry import Geometry, nonzero_box
from reactkd.images.readers import read_image
from reactkd.images.writers import write_image
from reactkd.inference.case_report import REPORT_FILE, write_case_report
from reactkd.inference.result import ClassificationResult
from reactkd.json_files import read_json
from reactkd.vocabulary import RESULT_FILE

OUTPUT_FILES = (RESULT_FILE, "attention_cbam.nrrd", "attention_gradcam.nrrd", "graph.json", REPORT_FILE,
                "overview.png", "scene.mrb")


def write_outputs(result: ClassificationResult, out_dir: str | Path, ct: sitk.Image, mask: sitk.Image,
                  pet_fdg: sitk.Image | None = None, pet_act: sitk.Image | None = None,
                  render: bool = True, transfer: bool = False) -> dict[str, Path]:
    """Write result.json, the two attention maps, graph.json, report.html and (if render) overview.png and scene.mrb.

    `transfer=True` is for outputs read back at once by `read_outputs(..., reference=ct)` (the inference
    process): each map is cropped to the box of its non-zero voxels (the liver region) and left uncompressed,
    which cuts what is written and read for a full-size CT about tenfold; it writes no report.html."""
    out_dir = Path(out_dir)
    if render:
        from reactkd.memory import check_memory, classify_peak_bytes

        # Before the staging folder exists: VTK aborts the process when it runs out, leaving everything behind.
        check_memory(classify_peak_bytes(ct.GetNumberOfPixels(), render=True),
                     f"rendering a CT of {_size(ct)} voxels", "pass --no-render (the maps and result.json need "
                     "about half as much) or use a machine with more memory")
    with folder_lock(out_dir):
        try:
            remove_stale_staging(out_dir)
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=out_dir))
        except FileNotFoundError:
            raise _removed_error(out_dir) from None
        try:
            names = _write_set(result, staging, ct, mask, pet_fdg, pet_act, render, transfer)
            if not all((staging / name).is_file() for name in names):
                raise _removed_error(out_dir)  # a writer recreated the folder after someone removed it
            written = _install_set(staging, out_dir)
            if RESULT_FILE not in written:
                raise _removed_error(out_dir)  # removed between the check above and the install
            return written
        except (OSError, ReactKDError):
            if not staging.is_dir() or not out_dir.is_dir():
                raise _removed_error(out_dir) from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _removed_error(out_dir: Path) -> ReactKDError:
    """Another program removed the folder (or the staging folder) under the writers: one line, not the
    FileNotFoundError of whichever writer met it first."""
    return ReactKDError(f"{out_dir}: the output folder was removed while the results were being written; "
                        "nothing was kept (run again into a folder nothing else removes)")


def _size(image: sitk.Image) -> str:
    return " x ".join(map(str, image.GetSize()))


def _write_set(result, staging: Path, ct, mask, pet_fdg, pet_act, render: bool, transfer: bool) -> list[str]:
    """Write the output set into `staging`; returns the names written."""
    # Level 1: the maps are zero outside the liver box, so it compresses almost as well as the default, 1.5x faster.
    for name in ("attention_cbam", "attention_gradcam"):
        image = getattr(result, name)
        write_image(nonzero_box(image) if transfer else image, staging / f"{name}.nrrd", compress=not transfer,
                    level=1)
    write_graph_json(result.graph, staging / "graph.json")
    if not transfer:  # the inference process's outputs are read back at once; the module shows everything
        start = time.perf_counter()
        write_case_report(result, staging / REPORT_FILE, ct, mask)
        result.timings_ms["report"] = round((time.perf_counter() - start) * 1000, 1)
    if render:
        from reactkd.inference.scene_outputs import write_scene_outputs

        start = time.perf_counter()
        write_scene_outputs(result, staging, ct, mask, pet_fdg, pet_act)
        result.timings_ms["render_and_scene"] = round((time.perf_counter() - start) * 1000, 1)
    write_result_json(result, staging / RESULT_FILE)
    return [name for name in OUTPUT_FILES if (render or name not in ("overview.png", "scene.mrb"))
            and (not transfer or name != REPORT_FILE)]


def write_result_json(result: ClassificationResult | Mapping, path: str | Path) -> Path:
    """Write the summary of `result` (its `to_json`, or a mapping as it is) to `path` atomically: the one
    writer of ``result.json``, for `reactkd classify` and the Slicer module's export alike.

    Args:
        result: a ClassificationResult, or its summary as a mapping.
        path: the file to write (usually ``<folder>/result.json``).
    """
    path = Path(path)
    summary = result.to_json() if hasattr(result, "to_json") else dict(result)
    write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
    return path


def write_graph_json(graph: Mapping, path: str | Path) -> Path:
    """Write a region graph (``graph.json`` layout) to `path` atomically."""
    path = Path(path)
    write_text_atomic(path, json.dumps(graph, indent=1) + "\n")
    return path


def _install_set(staging: Path, out_dir: Path) -> dict[str, Path]:
    """Move the staged set into `out_dir`: the old result.json goes first and the new one comes last, so a
    crash in between leaves a folder without result.json (incomplete), never a mixed one that looks whole."""
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    for name in OUTPUT_FILES:
        if not (staging / name).exists():
            (out_dir / name).unlink(missing_ok=True)  # an earlier run's output this run does not replace
    written = {}
    for name in (*OUTPUT_FILES[1:], OUTPUT_FILES[0]):
        if (staging / name).exists():
            (staging / name).replace(out_dir / name)
            written[name] = out_dir / name
    return written


def _onto(map_image: sitk.Image, reference: sitk.Image, name: str) -> sitk.Image:
    """`map_image` (a box of `reference`'s grid) pasted into zeros on the whole reference grid."""
    if map_image.GetSize() == reference.GetSize() and Geometry.of(map_image).same_as(Geometry.of(reference), tol=1e-4):
        return map_image
    index = reference.TransformPhysicalPointToContinuousIndex(map_image.GetOrigin())
    start = [int(round(i)) for i in index]
    box = Geometry.of(map_image)
    fits = all(abs(i - s) < 1e-3 for i, s in zip(index, start)) and all(
        0 <= s and s + n <= total for s, n, total in zip(start, map_image.GetSize(), reference.GetSize()))
    if not fits or not np.allclose(box.spacing, reference.GetSpacing(), rtol=1e-5) or \
            not np.allclose(box.direction, reference.GetDirection(), atol=1e-6):
        raise ReactKDError(f"{name} is not a box of the CT grid")
    full = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.float32)
    x, y, z = start
    nx, ny, nz = map_image.GetSize()
    full[z:z + nz, y:y + ny, x:x + nx] = sitk.GetArrayViewFromImage(map_image)
    image = sitk.GetImageFromArray(full)
    image.CopyInformation(reference)
    return image


def read_outputs(out_dir: str | Path, reference: sitk.Image | None = None) -> ClassificationResult:
    """The ClassificationResult a `write_outputs` folder holds (result.json, both maps, graph.json): how the
    Slicer module receives what its inference process computed. Maps written with ``transfer=True`` come back
    on the whole grid of `reference` (the CT)."""
    out_dir = Path(out_dir)
    try:
        summary = read_json(out_dir / RESULT_FILE)
        graph = read_json(out_dir / "graph.json")
    except ReactKDError as exc:
        raise ReactKDError(f"classification outputs in {out_dir} are unreadable ({exc})") from None
    maps = {}
    for name, label in (("attention_cbam", "CBAM map"), ("attention_gradcam", "Grad-CAM map")):
        maps[name] = read_image(out_dir / f"{name}.nrrd", name=label)
        if reference is not None:
            maps[name] = _onto(maps[name], reference, label)
    return ClassificationResult.from_json(summary, maps["attention_cbam"], maps["attention_gradcam"], graph)
