"""The shipped sample case: checksums, size, loading into a headless scene, and refusal of a damaged file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed")

import slicer  # noqa: E402

from reactkd.images.readers import read_image  # noqa: E402
from reactkd.scene import volume_array  # noqa: E402
from REACTKDLib.sample_data import (  # noqa: E402
    SAMPLE_DIR,
    SAMPLE_FILES,
    SampleDataError,
    load_sample_case,
    read_manifest,
    sample_data_source,
    sha256_of,
    verify_sample_files,
)
from REACTKDLib.scene_inputs import find_segment_ids, inputs_from_nodes  # noqa: E402

#: Parameters of SampleData.SampleDataLogic.registerCustomSampleDataSource (Slicer 5.x); SampleData itself
#: needs the Slicer application, so the keyword names are checked against this list.
REGISTER_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                       "thumbnailFileName", "loadFileType", "loadFiles", "loadFileProperties", "checksums"}


def test_manifest_checksums_match_the_files_and_the_case_is_small():
    manifest = read_manifest()
    for name, entry in manifest["files"].items():
        assert sha256_of(SAMPLE_DIR / name) == entry["sha256"], name
    assert set(SAMPLE_FILES) <= set(manifest["files"])
    assert sum((SAMPLE_DIR / name).stat().st_size for name in manifest["files"]) < 2_000_000
    assert set(verify_sample_files()) == set(SAMPLE_FILES)


def test_sample_case_loads_with_segments_found_by_name(headless):
    scene = headless.scene
    sample = load_sample_case(scene)
    assert [node.GetName() for node in sample.nodes()] == [name for name, _ in SAMPLE_FILES.values()]
    assert sample.segmentation.IsA("vtkMRMLSegmentationNode")
    assert find_segment_ids(sample.segmentation) == ("liver", "tumour")
    ct_file = read_image(SAMPLE_DIR / "ct.nrrd")
    np.testing.assert_array_equal(volume_array(sample.ct), sitk.GetArrayFromImage(ct_file))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parents = {hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) for node in sample.nodes()}
    assert len(parents) == 1 and hierarchy.GetItemLevel(parents.pop()) == "Study"
    # The segmentation lies on the CT: both segments give voxels on the CT grid.
    labels = sitk.GetArrayFromImage(inputs_from_nodes(sample.ct, sample.segmentation)["mask"])
    assert {0, 1, 2} == set(np.unique(labels).tolist())
    assert read_manifest()["n_tumours"] >= 1


def test_a_damaged_file_is_refused_before_anything_is_loaded(headless, tmp_path):
    folder = tmp_path / "SampleData"
    shutil.copytree(SAMPLE_DIR, folder)
    damaged = folder / "pet_act.nrrd"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    before = headless.scene.GetNumberOfNodes()
    with pytest.raises(SampleDataError, match="pet_act.nrrd does not match its checksum"):
        load_sample_case(headless.scene, folder)
    (folder / "ct.nrrd").unlink()
    with pytest.raises(SampleDataError, match="missing"):
        verify_sample_files(folder)
    assert headless.scene.GetNumberOfNodes() == before


def test_sample_data_source_fits_slicer_registration():
    source = sample_data_source()
    assert set(source) <= REGISTER_PARAMETERS
    assert len(source["uris"]) == len(source["fileNames"]) == len(source["nodeNames"]) == len(source["checksums"])
    manifest = read_manifest()
    for uri, name, checksum in zip(source["uris"], source["fileNames"], source["checksums"]):
        assert uri.startswith("file://") and Path(uri[len("file://"):]).name == name
        assert checksum == f"SHA256:{manifest['files'][name]['sha256']}"
    assert source["loadFileType"][-1] == "SegmentationFile"
    assert Path(source["thumbnailFileName"]).is_file()
