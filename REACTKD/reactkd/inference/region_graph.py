"""The displayable region graph of one classified case (graph.json; its fields are listed in the README)."""

from __future__ import annotations

import numpy as np
import torch

from reactkd.graph import (
    GraphSettings,
    RegionSet,
    build_regions,
    edge_weights,
    node_features,
    soft_region_masks,
    strongest_edges,
)
from reactkd.preprocessing import PreprocessedCase

EDGES_PER_NODE = 3


def case_regions(case: PreprocessedCase, settings: GraphSettings | dict) -> RegionSet:
    """The case's region nodes on the model grid (the same as training's), with physical centroids.
    ``settings``: GraphSettings, or a package's metadata ``graph`` mapping (missing keys take the defaults)."""
    if not isinstance(settings, GraphSettings):
        settings = GraphSettings.from_metadata(settings)
    spacing_zyx = tuple(reversed(case.grid.spacing))
    return build_regions(case.label_map, spacing_zyx, **settings.to_dict(),
                         index_to_physical=case.grid.index_to_physical())


def region_graph(regions: RegionSet, features: torch.Tensor, importance_map: np.ndarray) -> dict:
    """Nodes (tumours, rings, liver parcels) with RAS centroids, volumes and importance; strongest edges.

    `features` is the model's (C, d, h, w) feature map; `importance_map` a (D, H, W) map on the model grid
    (Grad-CAM), whose mean over a node's voxels is the node's importance (scaled so the largest is 1).
    """
    n = regions.n_nodes
    node_index = torch.from_numpy(regions.node_index.astype(np.int64))[None].to(features.device)
    masks = soft_region_masks(node_index, n, features.shape[1:])
    node_feats = node_features(features[None].float(), masks)
    weights = edge_weights(node_feats, torch.ones(1, n, dtype=torch.bool, device=features.device))[0]
    ids = regions.node_index.ravel()
    inside = ids >= 0
    sums = np.bincount(ids[inside], weights=importance_map.ravel()[inside], minlength=n)
    counts = np.bincount(ids[inside], minlength=n)
    importance = sums / np.maximum(counts, 1)
    importance = importance / importance.max() if importance.max() > 0 else importance
    ras = regions.centroids_physical * np.array([-1.0, -1.0, 1.0])
    nodes = [{"id": i, "kind": regions.kinds[i], "label": regions.labels[i],
              "centroid_ras": [round(float(v), 3) for v in ras[i]],
              "volume_ml": round(float(regions.volumes_ml[i]), 4), "importance": round(float(importance[i]), 4)}
             for i in range(n)]
    edges = [{"source": i, "target": j, "weight": round(w, 4)}
             for i, j, w in strongest_edges(weights, EDGES_PER_NODE)]
    return {"nodes": nodes, "edges": edges}
