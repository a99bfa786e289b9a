"""The REACTKD sample case: a small synthetic PET/CT with its liver/tumour segmentation, shipped in
``REACTKD/Resources/SampleData`` with a SHA-256 per file in ``manifest.json`` (made by
``Resources/make_sample_data.py``).

Loading checks every checksum first and adds nothing to the scene unless all files are intact. The same
loader serves Slicer's Sample Data module (`register_sample_data`, run once Slicer has started) and the
headless tests. Imports only `slicer` (headless-testable); the files are this module's own Resources.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import slicer

from reactkd.errors import ReactKDError
from reactkd.images.readers import read_image
from reactkd.package.model_package import sha256_of
from reactkd.scene.overlays import apply_ct_window
from reactkd.scene.volumes import add_volume

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
MANIFEST_FILE = "manifest.json"
CATEGORY = "REACT-KD"
#: What the Sample Data button shows (Slicer displays `sampleName`; there is no separate description).
SAMPLE_NAME = "Synthetic liver PET/CT (REACT-KD)"
#: File name -> (node name, Sample Data load type). Order = order of loading and of returned nodes.
SAMPLE_FILES = {
    "ct.nrrd": ("REACTKD sample CT", "VolumeFile"),
    "pet_fdg.nrrd": ("REACTKD sample FDG PET", "VolumeFile"),
    "pet_act.nrrd": ("REACTKD sample acetate PET", "VolumeFile"),
    "mask.seg.nrrd": ("REACTKD sample segmentation", "SegmentationFile"),
}
THUMBNAIL_FILE = "thumbnail.png"


class SampleDataError(ReactKDError):
    """The shipped sample files are missing or do not match their checksums."""


@dataclass
class SampleNodes:
    ct: slicer.vtkMRMLScalarVolumeNode
    pet_fdg: slicer.vtkMRMLScalarVolumeNode
    pet_act: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode

    def nodes(self) -> list:
        return [self.ct, self.pet_fdg, self.pet_act, self.segmentation]


def read_manifest(folder: str | os.PathLike = SAMPLE_DIR) -> dict:
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SampleDataError(f"sample data manifest {path} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SampleDataError(f"sample data manifest {path} has no 'files' table")
    return manifest


def verify_sample_files(folder: str | os.PathLike = SAMPLE_DIR) -> dict[str, Path]:
    """Check each file of the sample case against its SHA-256 in the manifest; file name -> path."""
    folder = Path(folder)
    expected = read_manifest(folder)["files"]
    paths = {}
    for name in SAMPLE_FILES:
        path = folder / name
        digest = (expected.get(name) or {}).get("sha256")
        if not digest:
            raise SampleDataError(f"sample data manifest lists no checksum for {name}")
        if not path.is_file():
            raise SampleDataError(f"sample data file {path} is missing; reinstall the REACT-KD extension")
        if sha256_of(path) != digest:
            raise SampleDataError(f"sample data file {path} does not match its checksum; reinstall the "
                                  "REACT-KD extension")
        paths[name] = path
    return paths


def sample_data_source(folder: str | os.PathLike = SAMPLE_DIR) -> dict:
    """Keyword arguments for ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` (file URIs with
    their checksums, so Sample Data's own loader verifies them too)."""
    folder = Path(folder).resolve()
    files = read_manifest(folder)["files"]
    names = list(SAMPLE_FILES)
    thumbnail = folder / THUMBNAIL_FILE
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": [(folder / name).as_uri() for name in names],
        "fileNames": names,
        "nodeNames": [SAMPLE_FILES[name][0] for name in names],
        "loadFileType": [SAMPLE_FILES[name][1] for name in names],
        "checksums": [f"SHA256:{files[name]['sha256']}" for name in names],
        "thumbnailFileName": str(thumbnail) if thumbnail.is_file() else None,
    }


def _read_segmentation(scene, path: Path, name: str) -> slicer.vtkMRMLSegmentationNode:
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise SampleDataError(f"{path}: segmentation could not be read")
    finally:
        # Read-only resource: keep no storage node pointing at it (as Sample Data does).
        scene.RemoveNode(storage)
    node.CreateDefaultDisplayNodes()
    return node


def _place_in_study(scene, nodes: list) -> None:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "REACTKD synthetic patient")
    study = hierarchy.CreateStudyItem(patient, "PET/CT")
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, study)
        else:
            hierarchy.CreateItem(study, node)


def load_sample_case(scene, folder: str | os.PathLike = SAMPLE_DIR) -> SampleNodes:
    """Verify the sample files, then add CT, FDG PET, acetate PET and the liver/tumour segmentation to
    `scene` under one patient/study in the subject hierarchy. Adds nothing if any step fails.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` or a headless one).
        folder: the sample files and their manifest (default: the module's Resources/SampleData).
    """
    paths = verify_sample_files(folder)
    added: list = []
    try:
        volumes = []
        for file_name in list(SAMPLE_FILES)[:3]:
            node = add_volume(scene, read_image(paths[file_name]), SAMPLE_FILES[file_name][0])
            added.append(node)
            volumes.append(node)
        segmentation = _read_segmentation(scene, paths["mask.seg.nrrd"], SAMPLE_FILES["mask.seg.nrrd"][0])
        added.append(segmentation)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volumes[0])
        display = segmentation.GetDisplayNode()
        display.SetVisibility2DFill(False)
        display.SetVisibility2DOutline(True)
        apply_ct_window(volumes[0])
        nodes = SampleNodes(*volumes, segmentation)
        _place_in_study(scene, nodes.nodes())
    except BaseException:
        for node in added:
            displays = [node.GetNthDisplayNode(index) for index in range(node.GetNumberOfDisplayNodes())]
            scene.RemoveNode(node)
            for display in displays:
                scene.RemoveNode(display)
        raise
    return nodes


def register_sample_data() -> None:
    """Add the synthetic PET/CT case to Slicer's Sample Data module (call once Slicer has started). A failure
    is logged and never breaks Slicer's start-up; a damaged file is shown as one line when loading."""
    try:
        import SampleData

        def loadSample(source=None):
            try:
                with slicer.util.WaitCursor():
                    return load_sample_case(slicer.mrmlScene).nodes()
            except ReactKDError as exc:  # checksum mismatch, unreadable file: one line, no traceback
                slicer.util.errorDisplay(str(exc), windowTitle="REACT-KD")
                return []

        SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_data_source(),
                                                                 customDownloader=loadSample)
    except Exception:  # never break Slicer's start-up for a sample case
        logging.exception("REACT-KD sample data could not be registered")
