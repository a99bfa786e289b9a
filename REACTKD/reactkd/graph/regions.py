"""Region nodes of the REACT-KD graph, built from a liver/tumour label map.

Nodes, in this order (the order is part of the contract: node id = position):

* ``T1..TM`` tumour connected components (26-connectivity), the largest ``max_tumours`` by volume, ordered by
  volume (descending), ties by raster position of the component's first voxel. 26-connectivity so that the
  staircase of a resampled lesion does not split it in two; components beyond ``max_tumours`` stay tumour
  voxels (they are neither nodes nor parenchyma).
* ``R1..RM`` peritumoral rings: liver parenchyma (label 1) within ``ring_mm`` millimetres (Euclidean, with the
  anisotropic spacing) of a kept tumour. The ring is restricted to the liver because the peritumoral
  parenchyma (microvascular invasion, capsule) is what matters for grading; fat or other organs in the crop
  would only add noise. Where rings of two tumours overlap, a voxel goes to the nearest tumour. ``Rk`` keeps
  the number of its tumour ``Tk``; a ring that is empty (tumour touching only background) is not a node.
* ``L1..LK`` liver parcels: parenchyma minus rings, split by k-means on voxel coordinates in mm (fixed seed,
  fit on a seeded subsample, then every voxel assigned to its nearest centre), ordered by centre z, y, x.

Every voxel belongs to at most one node, so the graph is stored as one int16 node-id volume (-1 = none)
rather than N boolean masks (24 boolean masks of a 512 x 512 x 150 label map would take 940 MB).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from sklearn.cluster import KMeans
from threadpoolctl import ThreadpoolController

from reactkd.errors import MaskError
from reactkd.graph.settings import GraphSettings
from reactkd.vocabulary import (
    BACKGROUND_CODE,
    FIRST_TUMOUR_LABEL,
    LIVER_CODE,
    LIVER_LABEL,
    RING_LABEL,
    TUMOUR_CODE,
)

#: Codes of the input label map (``reactkd.vocabulary``).
BACKGROUND, LIVER, TUMOUR = BACKGROUND_CODE, LIVER_CODE, TUMOUR_CODE
#: Voxels drawn (seeded) from the parenchyma to fit k-means; all voxels are then assigned to the centres.
KMEANS_SAMPLE = 5_000


@dataclass
class RegionSet:
    """Graph nodes of one case: a node-id volume plus per-node attributes (all arrays indexed by node id)."""

    node_index: np.ndarray  # (z, y, x) int16, node id or -1
    kinds: list[str]  # "tumour" | "ring" | "liver"
    labels: list[str]  # "T1", "R1", "L3", ...
    centroids_index: np.ndarray  # (N, 3) continuous index (x, y, z) of a voxel inside the region
    centroids_physical: np.ndarray | None  # (N, 3) LPS mm, when index_to_physical was given
    volumes_ml: np.ndarray  # (N,)
    n_tumour_components: int  # tumour components found (may exceed the tumour nodes kept)

    @property
    def n_nodes(self) -> int:
        return len(self.kinds)


def _check_inputs(label_map: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    label_map = np.asarray(label_map)
    if label_map.ndim != 3:
        raise MaskError(f"label map must be 3D (z, y, x), got shape {label_map.shape}")
    if not np.issubdtype(label_map.dtype, np.integer) and not np.issubdtype(label_map.dtype, np.bool_):
        if not np.all(np.mod(label_map, 1) == 0):
            raise MaskError("label map must contain integer labels")
        label_map = label_map.astype(np.int16)
    if label_map.size and (label_map.min() < BACKGROUND or label_map.max() > TUMOUR):
        unknown = np.unique(label_map[(label_map < BACKGROUND) | (label_map > TUMOUR)])
        raise MaskError(f"label map has unknown labels {unknown.tolist()} (expected 0 background, 1 liver, 2 tumour)")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise MaskError(f"spacing must be three positive numbers (z, y, x), got {spacing_zyx}")
    return label_map


def _tumour_components(tumour: np.ndarray, max_tumours: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Component-label volume and the kept component labels, largest first (ties: raster order)."""
    components, n_found = ndimage.label(tumour, structure=np.ones((3, 3, 3), bool))
    volumes = np.bincount(components.ravel(), minlength=n_found + 1)[1:]
    # ndimage.label numbers components in raster order of their first voxel, so the label breaks ties.
    order = np.lexsort((np.arange(1, n_found + 1), -volumes))
    return components, order[:max_tumours] + 1, n_found


def _rings(label_map: np.ndarray, components: np.ndarray, kept: np.ndarray,
           spacing_zyx: tuple[float, float, float], ring_mm: float) -> np.ndarray:
    """Volume with, per parenchyma voxel within ring_mm of a kept tumour, the rank (1-based) of that tumour."""
    rings = np.zeros(label_map.shape, np.int16)
    if len(kept) == 0 or ring_mm <= 0:
        return rings
    rank_of_label = np.zeros(components.max() + 1, np.int16)
    rank_of_label[kept] = np.arange(1, len(kept) + 1)
    kept_rank = rank_of_label[components]
    # The distance transform only needs the kept tumours' bounding box plus the ring width: much smaller
    # than the whole field of view on native-resolution label maps.
    margin = [int(np.ceil(ring_mm / s)) + 1 for s in spacing_zyx]
    all_objects = ndimage.find_objects(components)
    objects = [all_objects[label - 1] for label in kept]
    box = tuple(slice(max(min(o[a].start for o in objects) - margin[a], 0),
                      min(max(o[a].stop for o in objects) + margin[a], label_map.shape[a])) for a in range(3))
    rank_box = kept_rank[box]
    distance, nearest = ndimage.distance_transform_edt(rank_box == 0, sampling=spacing_zyx, return_indices=True)
    nearest_rank = rank_box[tuple(nearest)]
    in_ring = (distance <= ring_mm) & (label_map[box] == LIVER)
    rings[box] = np.where(in_ring, nearest_rank, 0)
    return rings


@functools.cache
def _thread_controller() -> ThreadpoolController:
    # Built once: each threadpool_limits() call would rescan the loaded libraries (~50 ms).
    return ThreadpoolController()


def _liver_parcels(parenchyma: np.ndarray, spacing_zyx: tuple[float, float, float], n_parcels: int,
                   random_state: int) -> np.ndarray:
    """Volume of parcel numbers (1-based, ordered by centre z, y, x) over the parenchyma, 0 elsewhere."""
    parcels = np.zeros(parenchyma.shape, np.int16)
    coords_mm = np.stack(np.nonzero(parenchyma), axis=1) * np.asarray(spacing_zyx)
    k = min(n_parcels, len(coords_mm))
    if k == 0:
        return parcels
    rng = np.random.default_rng(random_state)
    # Drawn with replacement (no sort of the voxel list); a repeat only weights a point twice.
    sample = coords_mm if len(coords_mm) <= KMEANS_SAMPLE else coords_mm[
        rng.integers(0, len(coords_mm), KMEANS_SAMPLE)]
    if len(sample) < 50 * k:  # only a tiny parenchyma can have fewer distinct voxels than parcels
        k = min(k, len(np.unique(sample, axis=0)))
    # One thread: the problem is tiny, and OpenMP start-up / oversubscription on a busy machine cost 10x the work.
    with _thread_controller().limit(limits=1):
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(sample)
        assignment = kmeans.predict(coords_mm)
    centres = kmeans.cluster_centers_
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))
    rank = np.empty(k, np.int16)
    rank[order] = np.arange(1, k + 1)
    parcels[parenchyma] = rank[assignment]
    return parcels


def _inside_points(node_index: np.ndarray, n_nodes: int, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """Per node: voxel count and the region voxel nearest (in mm) to its centre of mass, as index (z, y, x).

    The centre of mass of a ring (or a crescent-shaped parcel) lies outside the region; for display the node
    must sit inside it, so the nearest region voxel is used instead.
    """
    zyx = np.nonzero(node_index >= 0)
    ids = node_index[zyx].astype(np.int64)
    counts = np.bincount(ids, minlength=n_nodes)
    com = np.stack([np.bincount(ids, weights=c, minlength=n_nodes) for c in zyx], axis=1) / counts[:, None]
    squared = sum(((c - com[ids, axis]) * s) ** 2 for axis, (c, s) in enumerate(zip(zyx, spacing_zyx)))
    # Per-node minimum by one scatter (O(n); scipy's minimum_position sorts, 10x slower on native grids),
    # then the first voxel reaching it, so ties resolve in raster order.
    minimum = torch.full((n_nodes,), torch.inf, dtype=torch.float64).scatter_reduce(
        0, torch.from_numpy(ids), torch.from_numpy(squared), "amin").numpy()
    hits = np.flatnonzero(squared == minimum[ids])
    _, first = np.unique(ids[hits], return_index=True)
    points_zyx = np.stack([c[hits[first]] for c in zyx], axis=1).astype(np.float64)
    return counts, points_zyx


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def build_regions(label_map: np.ndarray, spacing_zyx: tuple[float, float, float],
                  max_tumours: int = GraphSettings.max_tumours, liver_parcels: int = GraphSettings.liver_parcels,
                  ring_mm: float = GraphSettings.ring_mm, index_to_physical: np.ndarray | None = None,
                  allow_no_tumour: bool = False, random_state: int = 0) -> RegionSet:
    """Split a label map (0 background, 1 liver, 2 tumour; (z, y, x)) into tumour, ring and liver-parcel nodes.

    ``spacing_zyx`` is the voxel size in mm in array order. ``index_to_physical`` (4x4, continuous index
    (x, y, z, 1) -> LPS mm, e.g. ``Geometry.index_to_physical()``) adds physical centroids. Raises MaskError for
    an empty liver, or an empty tumour unless ``allow_no_tumour`` (then the graph has liver parcels only).
    Deterministic: the same label map always gives the same nodes in the same order. The defaults are
    ``GraphSettings``'; callers with settings pass ``**settings.to_dict()``.

    Example:
        >>> label_map = np.ones((4, 6, 6), np.int16)  # all liver ...
        >>> label_map[1:3, 1:3, 1:3] = 2  # ... around one 8-voxel tumour
        >>> regions = build_regions(label_map, (1.0, 1.0, 1.0), liver_parcels=2, ring_mm=1.0)
        >>> regions.labels, regions.kinds
        (['T1', 'R1', 'L1', 'L2'], ['tumour', 'ring', 'liver', 'liver'])
        >>> regions.node_index.shape, int(regions.node_index.max()), float(regions.volumes_ml[0])
        ((4, 6, 6), 3, 0.008)
    """
    full = _check_inputs(label_map, spacing_zyx)
    spacing_zyx = tuple(float(s) for s in spacing_zyx)
    if max_tumours < 1 or liver_parcels < 0:
        raise MaskError(f"max_tumours must be >= 1 and liver_parcels >= 0, got {max_tumours}, {liver_parcels}")
    if not (full == LIVER).any():
        raise MaskError("the label map has no liver voxels (label 1)")
    # Everything below runs inside the organ's bounding box: on a native CT the liver is ~10 % of the volume.
    box = _bounding_box(full != BACKGROUND)
    labels_box = full[box]
    tumour = labels_box == TUMOUR
    if not tumour.any() and not allow_no_tumour:
        raise MaskError("the label map has no tumour voxels (label 2)")

    components, kept, n_found = _tumour_components(tumour, max_tumours)
    rings = _rings(labels_box, components, kept, spacing_zyx, ring_mm)
    parcels = _liver_parcels((labels_box == LIVER) & (rings == 0), spacing_zyx, liver_parcels, random_state)

    # Candidate ids: tumours 0..M-1, rings M..2M-1, parcels 2M..2M+K-1; empty candidates are dropped below.
    n_kept, n_parcels = len(kept), int(parcels.max())
    rank_of_label = np.zeros(int(components.max()) + 1, np.int16)
    rank_of_label[kept] = np.arange(1, n_kept + 1)
    candidate = rank_of_label[components] - 1
    candidate = np.where(rings > 0, rings + (n_kept - 1), candidate)
    candidate = np.where(parcels > 0, parcels + (2 * n_kept - 1), candidate).astype(np.int16)
    n_candidates = 2 * n_kept + n_parcels
    present = np.bincount(candidate[candidate >= 0], minlength=n_candidates) > 0
    new_id = (np.cumsum(present) - 1).astype(np.int16)
    node_box = np.where(candidate >= 0, new_id[np.maximum(candidate, 0)], -1).astype(np.int16)
    node_index = np.full(full.shape, -1, np.int16)
    node_index[box] = node_box

    all_kinds = ["tumour"] * n_kept + ["ring"] * n_kept + ["liver"] * n_parcels
    all_labels = ([f"T{i}" for i in range(1, n_kept + 1)] + [f"R{i}" for i in range(1, n_kept + 1)]
                  + [f"L{i}" for i in range(1, n_parcels + 1)])
    kinds = [k for k, keep in zip(all_kinds, present) if keep]
    labels = [name for name, keep in zip(all_labels, present) if keep]

    counts, points_zyx = _inside_points(node_box, len(kinds), spacing_zyx)
    points = (points_zyx + [b.start for b in box])[:, ::-1].copy()  # -> continuous index (x, y, z)
    physical = None
    if index_to_physical is not None:
        matrix = np.asarray(index_to_physical, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise MaskError(f"index_to_physical must be a 4x4 matrix, got shape {matrix.shape}")
        physical = points @ matrix[:3, :3].T + matrix[:3, 3]
    volumes_ml = counts * float(np.prod(spacing_zyx)) / 1000.0
    return RegionSet(node_index=node_index, kinds=kinds, labels=labels, centroids_index=points,
                     centroids_physical=physical, volumes_ml=volumes_ml, n_tumour_components=int(n_found))


def head_region_labels(regions: RegionSet) -> np.ndarray:
    """The region head's input from a region set: (z, y, x) int16, 0 outside, LIVER_LABEL (1) liver parenchyma
    (every parcel), RING_LABEL (2) peritumoral ring (every ring), FIRST_TUMOUR_LABEL (3) + k tumour node k
    (largest first); the codes are ``reactkd.vocabulary``'s."""
    kinds = np.asarray(regions.kinds)
    lookup = np.zeros(regions.n_nodes + 1, np.int16)  # slot 0 is "no node" (id -1 shifted by one)
    tumour_rank = np.cumsum(kinds == "tumour") - 1
    lookup[1:] = np.where(kinds == "tumour", FIRST_TUMOUR_LABEL + tumour_rank,
                          np.where(kinds == "ring", RING_LABEL, LIVER_LABEL))
    return lookup[regions.node_index.astype(np.int64) + 1]
