"""Batched, differentiable node pooling on feature maps, and the graph's edges (torch; CPU or GPU).

Region masks reach feature resolution as *area fractions* (adaptive average pooling of the one-hot node
volume): a node's soft mask at a feature voxel is the share of that voxel's input block it covers. A
non-empty node therefore always keeps a positive mass, however small it is (a one-voxel tumour covers 1/4096
of one feature voxel of a 16x-downsampled map), so its feature is the features of the voxel(s) it touches
and never NaN. Only empty nodes (padding, or an absent node) have zero mass: their feature is zero and
``node_mask`` marks them False.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Elements of the one-hot chunk used when the grid is not a multiple of the feature size.
_ONE_HOT_CHUNK_ELEMENTS = 1 << 26


def collate_regions(node_indices: Sequence[np.ndarray | torch.Tensor],
                    n_nodes_per_case: Sequence[int] | None = None,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-case node-id volumes (same grid, -1 = none) into (B, z, y, x) int64 and a (B, N) node mask.

    N is the largest node count; nodes ``>= n_nodes_per_case[b]`` of case b are padding. Without
    ``n_nodes_per_case`` the counts are read from the volumes (max id + 1).
    """
    volumes = [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in node_indices]
    if not volumes:
        raise ValueError("collate_regions needs at least one case")
    if len({tuple(v.shape) for v in volumes}) != 1:
        raise ValueError(f"node-id volumes must share one grid, got {[tuple(v.shape) for v in volumes]}")
    stacked = torch.stack([v.to(torch.int64) for v in volumes]).to(device)
    if n_nodes_per_case is None:
        counts = stacked.flatten(1).amax(dim=1) + 1
    else:
        counts = torch.as_tensor(list(n_nodes_per_case), dtype=torch.int64, device=stacked.device)
    n_max = max(int(counts.max()), 1)
    node_mask = torch.arange(n_max, device=stacked.device)[None, :] < counts[:, None]
    return stacked, node_mask


def soft_region_masks(node_index: torch.Tensor, n_nodes: int, feature_shape: Sequence[int]) -> torch.Tensor:
    """Area fraction of every node in every feature voxel: (B, z, y, x) ids -> (B, N, d, h, w) float32.

    Equals ``adaptive_avg_pool3d(one_hot(node_index))`` (sums to <= 1 over nodes at each feature voxel, < 1
    where some input voxels belong to no node). When the grid is a multiple of the feature size, the pooled
    values are counted with one bincount instead of materialising the one-hot volume (which for 8 cases x 24
    nodes x 64 x 128 x 128 would be 800 MB).
    """
    if node_index.ndim != 4:
        raise ValueError(f"node_index must be (B, z, y, x), got shape {tuple(node_index.shape)}")
    batch, *grid = node_index.shape
    out = tuple(int(s) for s in feature_shape)
    if len(out) != 3:
        raise ValueError(f"feature_shape must be (d, h, w), got {feature_shape}")
    ids = node_index.to(torch.int64)
    if all(g % o == 0 for g, o in zip(grid, out)):
        return _block_fractions(ids, n_nodes, grid, out)
    masks = []
    chunk = max(1, _ONE_HOT_CHUNK_ELEMENTS // max(1, ids.numel()))
    for start in range(0, n_nodes, chunk):
        nodes = torch.arange(start, min(start + chunk, n_nodes), device=ids.device)
        one_hot = (ids[:, None] == nodes[None, :, None, None, None]).to(torch.float32)
        masks.append(F.adaptive_avg_pool3d(one_hot, out))
    return torch.cat(masks, dim=1)


def _block_fractions(ids: torch.Tensor, n_nodes: int, grid: Sequence[int], out: Sequence[int]) -> torch.Tensor:
    batch = ids.shape[0]
    factors = [g // o for g, o in zip(grid, out)]
    device = ids.device
    n_blocks = out[0] * out[1] * out[2]
    n_keys = batch * (n_nodes + 2) * n_blocks
    index_dtype = torch.int32 if n_keys < 2**31 else torch.int64  # halves the memory traffic of the key
    block_z, block_y, block_x = (torch.arange(g, device=device, dtype=index_dtype) // f
                                 for g, f in zip(grid, factors))
    block = (block_z[:, None, None] * out[1] + block_y[None, :, None]) * out[2] + block_x[None, None, :]
    # Slot 0 collects voxels of no node (-1) and slot n_nodes + 1 any id beyond n_nodes; both are dropped.
    node = ids.to(index_dtype).clamp(-1, n_nodes) + 1
    case = torch.arange(batch, device=device, dtype=index_dtype)[:, None, None, None] * (n_nodes + 2)
    key = (node + case) * n_blocks + block
    counts = torch.bincount(key.flatten(), minlength=n_keys)
    counts = counts.view(batch, n_nodes + 2, *out)[:, 1:n_nodes + 1]
    return counts.to(torch.float32) / float(np.prod(factors))


def soft_region_mask_pyramid(node_index: torch.Tensor, n_nodes: int,
                             feature_shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """``soft_region_masks`` for several feature resolutions (e.g. student and teachers), one per shape.

    The finest resolution is counted from the voxels once; coarser ones that divide it are average-pooled
    from it (area fractions compose exactly), which is much cheaper than recounting the voxels.
    """
    shapes = [tuple(int(s) for s in shape) for shape in feature_shapes]
    finest = max(shapes, key=lambda shape: int(np.prod(shape)))
    finest_masks = soft_region_masks(node_index, n_nodes, finest)
    pyramid = []
    for shape in shapes:
        if shape == finest:
            pyramid.append(finest_masks)
        elif all(f % s == 0 for f, s in zip(finest, shape)):
            pyramid.append(F.avg_pool3d(finest_masks, [f // s for f, s in zip(finest, shape)]))
        else:
            pyramid.append(soft_region_masks(node_index, n_nodes, shape))
    return pyramid


def node_features(features: torch.Tensor, soft_masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Masked average of a feature map over each node: (B, C, d, h, w), (B, N, d, h, w) -> (B, N, C).

    Differentiable in ``features``. Nodes with zero mass (padding / absent) get a zero vector, not NaN.
    """
    if features.shape[0] != soft_masks.shape[0] or features.shape[2:] != soft_masks.shape[2:]:
        raise ValueError(f"features {tuple(features.shape)} and soft masks {tuple(soft_masks.shape)} disagree")
    weights = soft_masks.to(features.dtype)
    mass = weights.sum(dim=(2, 3, 4))
    summed = torch.einsum("bndhw,bcdhw->bnc", weights, features)
    # clamp_min keeps the division (and its gradient) finite; where() then zeroes the empty nodes.
    mean = summed / mass.clamp_min(eps)[..., None]
    return torch.where((mass > eps)[..., None], mean, torch.zeros_like(mean))


def edge_weights(node_feats: torch.Tensor, node_mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every node pair: (B, N, C) -> (B, N, N), zero wherever a node is padding."""
    unit = node_feats / node_feats.norm(dim=-1, keepdim=True).clamp_min(eps)
    similarity = unit @ unit.transpose(1, 2)
    pair_mask = node_mask[:, :, None] & node_mask[:, None, :]
    return similarity * pair_mask.to(similarity.dtype)


def strongest_edges(weights: torch.Tensor | np.ndarray, k: int,
                    node_mask: torch.Tensor | np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Edges to display for one graph (N, N): each node's k strongest neighbours, as unique (i, j, w), i < j.

    Self-loops and padded nodes are excluded; the list is sorted by weight, strongest first.
    """
    w = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
    w = w.detach().to("cpu", torch.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"strongest_edges takes one graph (N, N), got shape {tuple(w.shape)}")
    n = w.shape[0]
    valid = torch.ones(n, dtype=torch.bool) if node_mask is None else torch.as_tensor(
        np.asarray(node_mask) if not isinstance(node_mask, torch.Tensor) else node_mask).to("cpu", torch.bool)
    allowed = valid[:, None] & valid[None, :] & ~torch.eye(n, dtype=torch.bool)
    scores = torch.where(allowed, w, torch.full_like(w, -torch.inf))
    k = max(0, min(k, n - 1))
    if k == 0:
        return []
    top = scores.topk(k, dim=1).indices
    rows = torch.arange(n)[:, None].expand(n, k)
    keep = torch.isfinite(scores[rows, top])
    pairs = {(min(i, j), max(i, j)) for i, j in zip(rows[keep].tolist(), top[keep].tolist())}
    edges = [(i, j, float(w[i, j])) for i, j in pairs]
    return sorted(edges, key=lambda e: (-e[2], e[0], e[1]))
