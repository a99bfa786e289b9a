"""Save a scene as a Slicer data bundle (.mrb: a zip of the .mrml scene and its data files) and load one."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import slicer

from reactkd.atomic import atomic_path
from reactkd.errors import ReactKDError
from reactkd.scene.headless import SceneContext, create_headless_scene, vtk_warnings_silenced


def save_mrb(scene: slicer.vtkMRMLScene, path: str | os.PathLike) -> Path:
    """Write the scene and all its data (volumes, segmentation, markups, models, tables, colour tables) to
    an .mrb file, atomically. Opens in 3D Slicer with File > Add Data (or drag and drop)."""
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise ReactKDError(f"{path}: a scene bundle must end in .mrb")
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent, prefix=".mrb-") as folder:
        # Slicer names the bundle's inner folder and .mrml after the file, so write under the final name
        # in a private folder, then move it onto the atomic temporary.
        staged = Path(folder) / path.name
        if not scene.WriteToMRB(str(staged)) or not staged.is_file() or not staged.stat().st_size:
            raise ReactKDError(f"{path}: scene could not be written")
        try:  # a truncated bundle (full disk) loses the zip directory at its end: opening it fails
            zipfile.ZipFile(staged).close()
        except (zipfile.BadZipFile, OSError):
            raise ReactKDError(f"{path}: the scene was not written completely (is the disk full?)") from None
        os.replace(staged, tmp)
    return path


def load_mrb(path: str | os.PathLike, context: SceneContext | None = None) -> SceneContext:
    """Read an .mrb into `context`'s scene (a new headless scene when None) and return the context.

    The logics created with the scene register the node and storage classes (segmentations, markups) that
    reading needs.
    """
    path = Path(path)
    if not path.is_file():
        raise ReactKDError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise ReactKDError(f"{path}: not a readable Slicer scene bundle (not a zip archive)")
    context = context or create_headless_scene()
    with vtk_warnings_silenced():
        ok = context.scene.ReadFromMRB(str(path.resolve()))
    if not ok:
        raise ReactKDError(f"{path}: not a readable Slicer scene bundle")
    return context
