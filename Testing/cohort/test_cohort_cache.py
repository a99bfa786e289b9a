"""The cohort cache (issue 15, class 9): a truncated, empty or foreign cache file is detected, removed and
rebuilt, so one bad file never makes every later train/evaluate fail; a good cache is reused as it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reactkd.cli.main import main
from reactkd.cohort.cache import cohort_cache_dir, load_cohort
from reactkd.cohort.manifest import read_manifest
from reactkd.graph import GraphSettings
from reactkd.preprocessing import PreprocessConfig


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    assert main(["synth", "--out", str(root / "data"), "--cases", "3", "--seed", "9"]) == 0
    return read_manifest(root / "data/manifest.csv"), root / "cache"


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "other-arrays"])
def test_a_damaged_cache_is_rebuilt(damage, cohort, tmp_path):
    records, _ = cohort
    cache = tmp_path / "cache"
    settings = PreprocessConfig(grid=(8, 16, 16)), GraphSettings(max_tumours=2, liver_parcels=2)
    reference = load_cohort(records, *settings, cache_dir=cache)
    (file,) = cache.glob("cohort-*.npz")
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        file.write_bytes(b"")
    elif damage == "garbage":
        file.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        np.savez(file, images=np.zeros((1, 2)))
    again = load_cohort(records, *settings, cache_dir=cache)
    assert torch.equal(again.images, reference.images) and torch.equal(again.region_labels, reference.region_labels)
    assert load_cohort(records, *settings, cache_dir=cache).key == reference.key  # the rebuilt file is good
    with np.load(file) as rebuilt:
        assert "images" in rebuilt.files and len(rebuilt["images"]) == len(records)


def test_cache_folder_is_beside_the_manifest_unless_reactkd_cache_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("REACTKD_CACHE", raising=False)
    assert cohort_cache_dir(tmp_path / "cohort/manifest.csv") == tmp_path / "cohort/.reactkd-cache"
    monkeypatch.setenv("REACTKD_CACHE", str(tmp_path / "elsewhere"))  # train and evaluate both read it
    assert cohort_cache_dir(tmp_path / "cohort/manifest.csv") == tmp_path / "elsewhere"


@pytest.mark.parametrize("header,field", [("scan.nhdr", "data file: {}"), ("scan.mhd", "ElementDataFile = {}")])
def test_a_changed_detached_data_file_changes_the_cache_key(header, field, tmp_path):
    """The voxels of a detached header live in its data file: rewriting only that file must not serve the cached
    tensors of the old one (issue 25, class 3)."""
    import os

    from reactkd.cohort.cache import _cache_key
    from reactkd.cohort.manifest import CaseRecord

    (tmp_path / "voxels.bin").write_bytes(bytes(96))
    (tmp_path / header).write_text("NRRD0004\n" + field.format("voxels.bin") + "\n" if header.endswith(".nhdr")
                                   else "NDims = 3\n" + field.format("voxels.bin") + "\n")
    (tmp_path / "labels.nii").write_bytes(b"x")
    record = CaseRecord("k7", "q7", 2, tmp_path / header, None, None, tmp_path / "labels.nii")
    settings = PreprocessConfig(grid=(8, 16, 16)), GraphSettings(max_tumours=3, liver_parcels=2)
    before = _cache_key([record], *settings)
    stat = (tmp_path / "voxels.bin").stat()
    (tmp_path / "voxels.bin").write_bytes(b"\x01" * 96)  # same size, other content and time
    os.utime(tmp_path / "voxels.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert _cache_key([record], *settings) != before
