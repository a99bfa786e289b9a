"""Cohort cache: every case preprocessed once (the same `preprocess_case` inference uses) and held as
stacked tensors, with its region-graph node volume, so epochs never touch the disk or SimpleITK again.

A cache file (NumPy .npz, no pickle) keyed by the manifest content and the preprocessing settings lets the
teacher and student stages, folds and resumed runs skip preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reactkd.atomic import atomic_path
from reactkd.cohort.manifest import CaseRecord
from reactkd.errors import ReactKDError
from reactkd.graph import GraphSettings, build_regions, head_region_labels
from reactkd.images.image_files import image_files
from reactkd.images.readers import read_image
from reactkd.preprocessing import PreprocessConfig, preprocess_case

TENSOR_FIELDS = ("images", "available", "ct_hu", "node_index", "region_labels", "n_nodes", "labels", "spacing")


@dataclass
class CohortTensors:
    """Stacked, preprocessed cohort on the model grid (CPU tensors; a batch is moved to the device at once)."""

    images: torch.Tensor  # (N, 3, D, H, W) float32, normalised
    available: torch.Tensor  # (N, 3) bool
    ct_hu: torch.Tensor  # (N, D, H, W) float32
    node_index: torch.Tensor  # (N, D, H, W) int16, -1 outside every region
    region_labels: torch.Tensor  # (N, D, H, W) int16, the region head's input (graph.head_region_labels)
    n_nodes: torch.Tensor  # (N,) int64
    labels: torch.Tensor  # (N,) int64
    spacing: torch.Tensor  # (N, 3) grid spacing in mm (x, y, z)
    case_ids: list[str]
    key: str = ""  # identifies the cohort content and settings (names the teacher cache)
    #: (N, n_doses, D, H, W) float32 CT channel at each training dose (`cohort.doses`; the dose teacher's input)
    dose_ct: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.case_ids)

    def pin(self) -> CohortTensors:
        """Page-lock the tensors so host-to-GPU copies of a batch are asynchronous."""
        for name in TENSOR_FIELDS:
            setattr(self, name, getattr(self, name).pin_memory())
        if self.dose_ct is not None:
            self.dose_ct = self.dose_ct.pin_memory()
        return self


def cohort_cache_dir(manifest: str | os.PathLike) -> Path:
    """Where the preprocessed cohort and the teacher targets are cached: $REACTKD_CACHE when set (a manifest in
    a read-only folder), else `.reactkd-cache` beside the manifest."""
    return Path(os.environ.get("REACTKD_CACHE") or Path(manifest).resolve().parent / ".reactkd-cache")


def _cache_key(records: list[CaseRecord], preprocess: PreprocessConfig, graph: GraphSettings) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([preprocess.to_dict(), graph.max_tumours, graph.liver_parcels, graph.ring_mm,
                              "v2"]).encode())
    for record in records:
        for path in (record.ct, record.pet_fdg, record.pet_act, record.mask):
            if path is not None:
                stat = path.stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
                # A detached header's data files and a DICOM folder's files hold the voxels: a changed one must
                # not serve stale tensors. Single-file images add nothing, so their keys stay as they were.
                for file in image_files(path, f"{record.case_id} {path.name}"):
                    if file != path:
                        stat = file.stat()
                        digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        digest.update(f"{record.case_id}:{record.label}".encode())
        if record.world or record.cohort_version:  # manifests without them keep their earlier keys
            digest.update(f"world {record.world} {record.cohort_version}".encode())
    return digest.hexdigest()[:20]


def read_record(record: CaseRecord, with_pet: bool = True):
    """The CT, label map and (when present and asked for) PET images of one manifest row, errors naming the case."""
    def read(path, what, **kwargs):
        return read_image(path, name=f"{record.case_id} {what}", **kwargs) if path else None

    fdg, act = (read(record.pet_fdg, "pet_fdg"), read(record.pet_act, "pet_act")) if with_pet else (None, None)
    return read(record.ct, "ct"), read(record.mask, "mask", labels=True), fdg, act


def preprocess_record(record: CaseRecord, preprocess: PreprocessConfig, graph: GraphSettings) -> dict[str, np.ndarray]:
    """Read and preprocess one case and build its region volume (shared with `reactkd evaluate`)."""
    ct, mask, fdg, act = read_record(record)
    try:
        case = preprocess_case(ct, mask, fdg, act, preprocess)
    except ReactKDError as exc:  # name the case: a cohort has hundreds
        raise type(exc)(f"{record.case_id}: {exc}") from None
    spacing_zyx = tuple(reversed(case.grid.spacing))
    regions = build_regions(case.label_map, spacing_zyx, **graph.to_dict())
    return {"images": case.images, "available": case.available, "ct_hu": case.ct_hu,
            "node_index": regions.node_index.astype(np.int16), "n_nodes": np.int64(regions.n_nodes),
            "region_labels": head_region_labels(regions),
            "spacing": np.asarray(case.grid.spacing, dtype=np.float32)}


def load_cohort(records: list[CaseRecord], preprocess: PreprocessConfig, graph: GraphSettings,
                cache_dir: Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> CohortTensors:
    """Preprocess every record (or read them from the cache) and stack them."""
    cache_file = None
    key = _cache_key(records, preprocess, graph)
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"cohort-{key}.npz"
        arrays = _read_cache(cache_file, len(records))
        if arrays is not None:
            return _to_tensors(arrays, records, key)
    parts = []
    for i, record in enumerate(records):
        parts.append(preprocess_record(record, preprocess, graph))
        if progress:
            progress(i + 1, len(records))
    arrays = {key: np.stack([p[key] for p in parts]) for key in parts[0]}
    if cache_file is not None:
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return _to_tensors(arrays, records, key)


CACHE_ARRAYS = ("images", "available", "ct_hu", "node_index", "region_labels", "n_nodes", "spacing")


def _read_cache(cache_file: Path, n_cases: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache or it is unusable (truncated, empty, another shape):
    a bad cache is removed and rebuilt, never a reason for every later run to fail."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if sorted(arrays) != sorted(CACHE_ARRAYS) or any(len(a) != n_cases for a in arrays.values()):
            raise ValueError("unexpected content")
        return arrays
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        logging.getLogger(__name__).warning("cohort cache %s is unusable (%s); rebuilding it", cache_file, exc)
        cache_file.unlink(missing_ok=True)
        return None


def _to_tensors(arrays: dict[str, np.ndarray], records: list[CaseRecord], key: str) -> CohortTensors:
    return CohortTensors(
        images=torch.from_numpy(arrays["images"]), available=torch.from_numpy(arrays["available"]),
        ct_hu=torch.from_numpy(arrays["ct_hu"]), node_index=torch.from_numpy(arrays["node_index"]),
        region_labels=torch.from_numpy(arrays["region_labels"]),
        n_nodes=torch.from_numpy(arrays["n_nodes"]).long(), labels=torch.tensor([r.label for r in records]),
        spacing=torch.from_numpy(arrays["spacing"]), case_ids=[r.case_id for r in records], key=key)
