"""Region graph of a case: tumour, peritumoral-ring and liver-parcel nodes (numpy, from the label map) and
their batched, differentiable features and edges on feature maps (torch)."""

from reactkd.graph.pooling import (
    collate_regions,
    edge_weights,
    node_features,
    soft_region_mask_pyramid,
    soft_region_masks,
    strongest_edges,
)
from reactkd.graph.regions import RegionSet, build_regions, head_region_labels
from reactkd.graph.settings import GraphSettings

__all__ = [
    "GraphSettings",
    "RegionSet",
    "build_regions",
    "collate_regions",
    "edge_weights",
    "head_region_labels",
    "node_features",
    "soft_region_mask_pyramid",
    "soft_region_masks",
    "strongest_edges",
]
