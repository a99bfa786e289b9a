"""Property-based tests (hypothesis): geometry transforms, the grid <-> native inverse mapping, region graph
construction, the region graph distillation loss, and a bounded fuzz of the image and manifest readers.

All are marked `fuzz`: `make fuzz` reruns them with the "long" profile (see conftest.py).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from rel_support import fuzz_settings
from scipy import ndimage

from reactkd.cohort.manifest import read_manifest
from reactkd.errors import ManifestError, ReactKDError
from reactkd.graph import build_regions
from reactkd.images.geometry import Geometry
from reactkd.images.readers import read_image
from reactkd.losses import rgd_loss
from reactkd.preprocessing import grid_geometry, to_native

pytestmark = pytest.mark.fuzz

finite = functools.partial(st.floats, allow_nan=False, allow_infinity=False)


@st.composite
def directions(draw) -> tuple[float, ...]:
    """Random orthonormal 3x3 direction (rotation from a unit quaternion, optionally a reflection)."""
    q = np.array(draw(st.lists(finite(-1, 1), min_size=4, max_size=4)))
    assume(np.linalg.norm(q) > 0.1)
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    if draw(st.booleans()):
        rotation[:, draw(st.integers(0, 2))] *= -1
    return tuple(rotation.ravel())


@st.composite
def geometries(draw, max_size: int = 30) -> Geometry:
    size = tuple(draw(st.integers(2, max_size)) for _ in range(3))
    spacing = tuple(draw(finite(0.2, 6.0)) for _ in range(3))
    origin = tuple(draw(finite(-500, 500)) for _ in range(3))
    return Geometry(size, spacing, origin, draw(directions()))


def _sitk_image(geometry: Geometry) -> sitk.Image:
    return geometry.apply_to(sitk.Image(list(geometry.size), sitk.sitkUInt8))


@fuzz_settings(40)
@given(geometries(), st.lists(finite(-50, 80), min_size=3, max_size=3))
def test_index_to_physical_matches_simpleitk(geometry, index):
    image = _sitk_image(geometry)
    expected = np.array(image.TransformContinuousIndexToPhysicalPoint(index))
    homogeneous = np.append(index, 1.0)
    np.testing.assert_allclose(geometry.index_to_physical() @ homogeneous, [*expected, 1.0], atol=1e-6)
    np.testing.assert_allclose(geometry.index_to_ras() @ homogeneous, [*(expected * [-1, -1, 1]), 1.0], atol=1e-6)
    assert Geometry.of(image).same_as(geometry, tol=1e-9)


@st.composite
def boxes(draw, geometry: Geometry):
    box = []
    for size in geometry.size:
        start = draw(st.integers(0, size - 1))
        box.append((start, draw(st.integers(start + 1, size))))
    return tuple(box)


@fuzz_settings(30)
@given(st.data())
def test_constant_map_on_the_grid_maps_back_to_exactly_the_crop_box(data):
    native = data.draw(geometries(max_size=24))
    box = data.draw(boxes(native))
    grid_dhw = tuple(data.draw(st.integers(2, 12)) for _ in range(3))
    grid = grid_geometry(native, box, grid_dhw)
    # Each grid voxel centre lies where the box's tiling puts it in native continuous index space.
    factor = np.array([stop - start for start, stop in box]) / np.array(grid.size)
    index = np.array([data.draw(st.integers(0, s - 1)) for s in grid.size], dtype=float)
    native_index = np.array([start for start, _ in box]) - 0.5 + (index + 0.5) * factor
    np.testing.assert_allclose(grid.index_to_physical() @ np.append(index, 1),
                               native.index_to_physical() @ np.append(native_index, 1), atol=1e-6)
    mapped = sitk.GetArrayFromImage(to_native(np.ones(grid_dhw, np.float32), grid, native, box))
    inside = np.zeros(tuple(reversed(native.size)), bool)
    (x0, x1), (y0, y1), (z0, z1) = box
    inside[z0:z1, y0:y1, x0:x1] = True
    np.testing.assert_allclose(mapped[inside], 1.0, atol=1e-5)
    assert not mapped[~inside].any()


@st.composite
def label_maps(draw) -> np.ndarray:
    """A liver box with up to five small tumour boxes (possibly touching, possibly at the liver's edge)."""
    shape = tuple(draw(st.integers(6, 14)) for _ in range(3))
    labels = np.zeros(shape, np.uint8)
    liver = [sorted(draw(st.lists(st.integers(0, s), min_size=2, max_size=2, unique=True))) for s in shape]
    labels[tuple(slice(a, b) for a, b in liver)] = 1
    for _ in range(draw(st.integers(1, 5))):
        corner = [draw(st.integers(a, b - 1)) for a, b in liver]
        extent = [draw(st.integers(1, 3)) for _ in range(3)]
        labels[tuple(slice(c, c + e) for c, e in zip(corner, extent))] = 2
    assume((labels == 1).any())
    return labels


@fuzz_settings(30)
@given(label_maps(), st.integers(1, 4), st.integers(0, 4), st.lists(finite(0.5, 3.0), min_size=3, max_size=3))
def test_region_graph_construction_properties(labels, max_tumours, liver_parcels, spacing):
    regions = build_regions(labels, tuple(spacing), max_tumours=max_tumours, liver_parcels=liver_parcels,
                            ring_mm=2.0)
    ids = regions.node_index
    n = regions.n_nodes
    assert ids.shape == labels.shape and ids.min() >= -1 and ids.max() == n - 1
    assert np.array_equal(np.unique(ids[ids >= 0]), np.arange(n))  # every node owns voxels
    assert not (ids[labels == 0] >= 0).any()
    kinds = np.array(regions.kinds)
    for kind, label in (("tumour", 2), ("ring", 1), ("liver", 1)):
        members = np.isin(ids, np.flatnonzero(kinds == kind))
        assert (labels[members] == label).all(), kind
    components, found = ndimage.label(labels == 2, structure=np.ones((3, 3, 3), bool))
    assert regions.n_tumour_components == found
    assert (kinds == "tumour").sum() == min(found, max_tumours)
    sizes = np.sort(np.bincount(components.ravel())[1:])[::-1]
    tumour_sizes = sorted(np.bincount(ids[np.isin(ids, np.flatnonzero(kinds == "tumour"))],
                                      minlength=n)[kinds == "tumour"], reverse=True)
    assert list(tumour_sizes) == list(sizes[:max_tumours])  # the largest components are the ones kept
    np.testing.assert_allclose(regions.volumes_ml, np.bincount(ids[ids >= 0], minlength=n) * np.prod(spacing) / 1000)
    again = build_regions(labels.copy(), tuple(spacing), max_tumours=max_tumours, liver_parcels=liver_parcels,
                          ring_mm=2.0)
    assert np.array_equal(again.node_index, ids) and again.kinds == regions.kinds


@st.composite
def graph_batches(draw):
    batch, nodes = draw(st.integers(1, 3)), draw(st.integers(2, 8))
    widths = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    scale = draw(finite(0.01, 100.0))
    student = torch.randn(batch, nodes, widths[0], generator=generator, dtype=torch.float64) * scale
    teacher = torch.randn(batch, nodes, widths[1], generator=generator, dtype=torch.float64)
    mask = torch.ones(batch, nodes, dtype=torch.bool)
    for b in range(batch):
        real = draw(st.integers(2, nodes))
        mask[b, real:] = False
    return student, teacher, mask


@fuzz_settings(25)
@given(graph_batches(), st.randoms(use_true_random=False))
def test_graph_loss_properties(graphs, random):
    student, teacher, mask = graphs
    value = rgd_loss(student, teacher, mask)
    assert torch.isfinite(value) and value >= 0
    assert rgd_loss(student, student, mask) <= 1e-6  # identical graphs
    permutation = list(range(student.shape[1]))
    random.shuffle(permutation)
    permuted = rgd_loss(student[:, permutation], teacher[:, permutation], mask[:, permutation])
    assert float(permuted) == pytest.approx(float(value), rel=1e-3, abs=1e-6)


# --------------------------------------------------------------------------------------- reader fuzzing
@functools.cache
def _valid_files() -> dict[str, bytes]:
    """Small valid images in each reader's formats (compressed and not)."""
    image = sitk.GetImageFromArray(np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8))
    image.SetSpacing((0.9, 1.1, 2.5))
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for suffix, compress in ((".nii.gz", True), (".nii", False), (".nrrd", False), (".nrrd", True),
                                 (".mha", False), (".mha", True)):
            path = Path(folder) / f"image{suffix}"
            sitk.WriteImage(image, str(path), useCompression=compress)
            files[f"{suffix}{'-z' if compress else ''}"] = path.read_bytes()
    return files


@st.composite
def mutated_files(draw) -> tuple[str, bytes]:
    key = draw(st.sampled_from(sorted(_valid_files())))
    data = bytearray(_valid_files()[key])
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return key.split("-")[0], bytes(data)


def _read_or_refuse(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            image = read_image(path)
        except ReactKDError as exc:
            assert "\n" not in str(exc)
            return
        assert image.GetDimension() == 3 and np.isfinite(sitk.GetArrayViewFromImage(image)).all()


@fuzz_settings(50)
@given(mutated_files())
def test_image_reader_on_mutated_files_only_raises_documented_errors(file):
    _read_or_refuse(*file)


@fuzz_settings(25)
@given(st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]), st.binary(max_size=600))
def test_image_reader_on_random_bytes_only_raises_documented_errors(suffix, data):
    _read_or_refuse(suffix, data)


CELLS = ["", "c1", "p1", "0", "2", "poor", "well", "ct.nii.gz", "mask.nii.gz", "../x.nii.gz", "/etc/passwd",
         "sub/../ct.nii.gz", '"a,b"', "\u00e9", "\x00", " ", "NaN", "-1"]


@fuzz_settings(50)
@given(st.lists(st.lists(st.one_of(st.sampled_from(CELLS), st.text(max_size=8)), max_size=9), max_size=6),
       st.booleans())
def test_manifest_reader_only_raises_manifest_errors(rows, with_header):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name in ("ct.nii.gz", "mask.nii.gz"):
            (root / name).write_bytes(b"x")
        lines = ([["case_id", "patient_id", "label", "ct", "pet_fdg", "pet_act", "mask"]] if with_header else [])
        text = "\n".join(",".join(row) for row in lines + rows)
        (root / "manifest.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            records = read_manifest(root / "manifest.csv")
        except ManifestError as exc:
            assert str(exc).startswith(("invalid manifest", str(root)))
            return
        for record in records:
            assert record.ct.is_relative_to(root.resolve()) and record.mask.is_relative_to(root.resolve())
