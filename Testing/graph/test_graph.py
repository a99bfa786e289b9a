"""Region graph: node construction from label maps, soft masks, node pooling and edges."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reactkd.errors import ConfigError, MaskError
from reactkd.graph import (
    GraphSettings,
    build_regions,
    collate_regions,
    edge_weights,
    node_features,
    soft_region_masks,
    strongest_edges,
)

SPACING = (2.0, 1.0, 1.0)  # anisotropic on purpose: z voxels are twice as thick


def liver_with_tumours(cubes, shape=(16, 40, 40)):
    """Liver box filling most of the grid, tumours as cubes given by (z0, y0, x0, edge) in voxels."""
    label_map = np.zeros(shape, np.uint8)
    label_map[2:-2, 3:-3, 3:-3] = 1
    for z0, y0, x0, edge in cubes:
        label_map[z0:z0 + edge, y0:y0 + edge, x0:x0 + edge] = 2
    return label_map


THREE_TUMOURS = [(4, 6, 6, 4), (8, 20, 24, 3), (5, 28, 8, 2)]  # volumes 64, 27, 8 voxels


def test_counts_kinds_and_order():
    regions = build_regions(liver_with_tumours(THREE_TUMOURS), SPACING, liver_parcels=4, ring_mm=2.0)
    assert regions.kinds == ["tumour"] * 3 + ["ring"] * 3 + ["liver"] * 4
    assert regions.labels == ["T1", "T2", "T3", "R1", "R2", "R3", "L1", "L2", "L3", "L4"]
    assert regions.n_nodes == 10 and regions.n_tumour_components == 3
    assert regions.node_index.dtype == np.int16
    assert set(np.unique(regions.node_index)) == set(range(-1, 10))
    # Tumours ordered by volume, largest first; volumes in ml from the known spacing (2 mm^3 per voxel).
    np.testing.assert_allclose(regions.volumes_ml[:3], np.array([64, 27, 8]) * 2.0 / 1000.0)
    # Every organ voxel is in exactly one node when all tumours are kept.
    organ_ml = (liver_with_tumours(THREE_TUMOURS) > 0).sum() * 2.0 / 1000.0
    assert regions.volumes_ml.sum() == pytest.approx(organ_ml)


def test_deterministic():
    label_map = liver_with_tumours(THREE_TUMOURS)
    first = build_regions(label_map, SPACING, liver_parcels=5)
    second = build_regions(label_map.copy(), SPACING, liver_parcels=5)
    np.testing.assert_array_equal(first.node_index, second.node_index)
    assert first.labels == second.labels
    np.testing.assert_array_equal(first.centroids_index, second.centroids_index)


def test_centroids_inside_their_regions_and_physical():
    index_to_physical = np.array([[0.0, 1.0, 0.0, -5.0], [1.0, 0.0, 0.0, 7.0], [0.0, 0.0, 2.0, 1.0], [0, 0, 0, 1]])
    regions = build_regions(liver_with_tumours(THREE_TUMOURS), SPACING, liver_parcels=4,
                            index_to_physical=index_to_physical)
    x, y, z = np.round(regions.centroids_index).astype(int).T
    np.testing.assert_array_equal(regions.node_index[z, y, x], np.arange(regions.n_nodes))
    homogeneous = np.c_[regions.centroids_index, np.ones(regions.n_nodes)]
    np.testing.assert_allclose(regions.centroids_physical, (homogeneous @ index_to_physical.T)[:, :3])


def test_rings_respect_anisotropic_spacing_and_stay_in_liver():
    label_map = liver_with_tumours([(7, 18, 18, 2)])
    regions = build_regions(label_map, SPACING, liver_parcels=2, ring_mm=2.0)
    ring = regions.node_index == regions.labels.index("R1")
    # 2 mm is one voxel along z (2 mm thick) but two voxels along x (1 mm).
    assert ring[6, 18, 18] and not ring[5, 18, 18]
    assert ring[7, 18, 16] and not ring[7, 18, 15]
    assert ring[7, 18, 21] and not ring[7, 18, 22]
    assert (label_map[ring] == 1).all()
    # Brute force: a liver voxel is in the ring exactly when it lies within 2 mm of a tumour voxel.
    tumour_mm = np.argwhere(label_map == 2) * SPACING
    liver_mm = np.argwhere(label_map == 1) * SPACING
    near = (((liver_mm[:, None] - tumour_mm[None]) ** 2).sum(-1).min(1) <= 4.0 + 1e-9)
    np.testing.assert_array_equal(ring[tuple(np.argwhere(label_map == 1).T)], near)


def test_overlapping_rings_go_to_nearest_tumour():
    label_map = liver_with_tumours([(6, 10, 10, 3), (6, 10, 17, 3)])  # gap of 4 voxels along x
    regions = build_regions(label_map, SPACING, liver_parcels=2, ring_mm=4.0)
    r1, r2 = regions.labels.index("R1"), regions.labels.index("R2")
    tumour_1_first = regions.node_index[7, 11, 11] == 0
    near_first, near_second = (r1, r2) if tumour_1_first else (r2, r1)
    assert regions.node_index[7, 11, 13] == near_first and regions.node_index[7, 11, 14] == near_first
    assert regions.node_index[7, 11, 15] == near_second and regions.node_index[7, 11, 16] == near_second


def test_multifocal_kept_up_to_max_largest_first():
    cubes = [(3, 5, 5, 2), (3, 5, 20, 4), (3, 20, 5, 3), (9, 20, 20, 5), (9, 30, 30, 1)]
    label_map = liver_with_tumours(cubes)
    every = build_regions(label_map, SPACING, max_tumours=8, liver_parcels=2)
    assert every.kinds.count("tumour") == 5 and every.n_tumour_components == 5
    some = build_regions(label_map, SPACING, max_tumours=3, liver_parcels=2)
    assert some.kinds.count("tumour") == 3 and some.n_tumour_components == 5
    np.testing.assert_allclose(some.volumes_ml[:3], np.array([125, 64, 27]) * 2.0 / 1000.0)
    # Dropped tumours are neither nodes nor parenchyma.
    assert (some.node_index[label_map == 2] >= 0).sum() == 125 + 64 + 27


def test_liver_parcels_ordered_by_z():
    regions = build_regions(liver_with_tumours([(2, 3, 3, 2)], shape=(40, 20, 20)), SPACING, liver_parcels=4)
    liver_nodes = [i for i, k in enumerate(regions.kinds) if k == "liver"]
    z_means = [np.argwhere(regions.node_index == i)[:, 0].mean() for i in liver_nodes]
    assert z_means == sorted(z_means)


def test_mask_errors_and_no_tumour_mode():
    no_tumour = liver_with_tumours([])
    with pytest.raises(MaskError, match="tumour"):
        build_regions(no_tumour, SPACING)
    regions = build_regions(no_tumour, SPACING, liver_parcels=3, allow_no_tumour=True)
    assert regions.kinds == ["liver"] * 3
    with pytest.raises(MaskError, match="liver"):
        build_regions(np.zeros((8, 8, 8), np.uint8), SPACING)
    with pytest.raises(MaskError, match="unknown labels"):
        build_regions(no_tumour + 3 * (no_tumour == 1), SPACING)


def test_soft_masks_are_area_fractions():
    generator = torch.Generator().manual_seed(0)
    node_index = torch.randint(-1, 5, (2, 8, 12, 12), generator=generator)
    for feature_shape in [(2, 3, 3), (3, 5, 5)]:  # divisible (bincount path) and not (one-hot path)
        masks = soft_region_masks(node_index, 5, feature_shape)
        one_hot = F.one_hot(node_index + 1, 6)[..., 1:].permute(0, 4, 1, 2, 3).float()
        expected = F.adaptive_avg_pool3d(one_hot, feature_shape)
        torch.testing.assert_close(masks, expected)
        assert bool((masks.sum(dim=1) <= 1 + 1e-6).all())
        assert bool((masks.sum(dim=1) < 1 - 1e-3).any())  # voxels with id -1 leave a gap


def test_node_features_hand_example():
    features = torch.arange(16, dtype=torch.float64).view(1, 2, 2, 2, 2)  # channel 0: 0..7, channel 1: 8..15
    node_index = torch.full((1, 4, 4, 4), -1)
    node_index[0, :2, :2, :2] = 0  # fills feature voxel (0, 0, 0)
    node_index[0, 2:, 2:, 2:] = 0  # fills feature voxel (1, 1, 1)
    node_index[0, 0, 0, 2:] = 1  # 2 of the 8 voxels of feature voxel (0, 0, 1)
    masks = soft_region_masks(node_index, 3, (2, 2, 2))
    feats = node_features(features, masks)
    torch.testing.assert_close(feats[0, 0], torch.tensor([(0 + 7) / 2, (8 + 15) / 2], dtype=torch.float64))
    torch.testing.assert_close(feats[0, 1], torch.tensor([1.0, 9.0], dtype=torch.float64))
    torch.testing.assert_close(feats[0, 2], torch.zeros(2, dtype=torch.float64))  # empty node: zeros, no NaN


def test_single_voxel_tumour_has_finite_feature():
    label_map = liver_with_tumours([(8, 21, 21, 1)], shape=(16, 32, 32))
    regions = build_regions(label_map, (1.0, 1.0, 1.0), liver_parcels=2)
    node_index, node_mask = collate_regions([regions.node_index], [regions.n_nodes])
    masks = soft_region_masks(node_index, regions.n_nodes, (2, 4, 4))  # 8x downsampling
    features = torch.randn(1, 5, 2, 4, 4, requires_grad=True)
    feats = node_features(features, masks)
    assert torch.isfinite(feats).all()
    torch.testing.assert_close(feats[0, 0], features[0, :, 1, 2, 2])  # the feature voxel holding it
    feats.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_collate_pads_node_mask():
    volumes = [np.full((2, 4, 4), 0, np.int16), np.arange(32, dtype=np.int16).reshape(2, 4, 4) % 3]
    node_index, node_mask = collate_regions(volumes, [1, 3])
    assert node_index.shape == (2, 2, 4, 4) and node_index.dtype == torch.int64
    assert node_mask.tolist() == [[True, False, False], [True, True, True]]
    _, inferred = collate_regions(volumes)
    assert inferred.tolist() == node_mask.tolist()
    with pytest.raises(ValueError):
        collate_regions([np.zeros((2, 4, 4)), np.zeros((2, 4, 5))])


def test_edge_weights_and_strongest_edges():
    feats = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, True, False]])
    weights = edge_weights(feats, mask)
    assert weights[0, 0, 1] == pytest.approx(1 / np.sqrt(1.01))
    assert weights[0, 0, 2] == pytest.approx(0.0, abs=1e-7)
    assert (weights[0, 3] == 0).all() and (weights[0, :, 3] == 0).all()
    edges = strongest_edges(weights[0], k=1, node_mask=mask[0])
    assert [(i, j) for i, j, _ in edges] == [(0, 1), (1, 2)]
    assert edges[0][2] >= edges[1][2]


# --------------------------------------------------------------------------- settings
def test_graph_settings_are_the_one_home_of_the_defaults():
    import inspect
    import json

    from reactkd.graph.settings import RECORDED_LOSS_KEYS
    from reactkd.losses import RGD_LIMITS
    from reactkd.training.config import TrainConfig
    from reactkd.vocabulary import DATA_DIR

    settings = GraphSettings()
    signature = inspect.signature(build_regions)
    assert {key: signature.parameters[key].default for key in GraphSettings.keys()} == settings.to_dict()
    assert TrainConfig().graph == settings
    assert tuple(RGD_LIMITS) == RECORDED_LOSS_KEYS  # what a package records beside its graph settings
    for metadata in sorted((DATA_DIR / "models").glob("*/metadata.json")):  # the shipped packages
        graph = json.loads(metadata.read_text())["graph"]
        assert GraphSettings.from_metadata(graph).to_dict() == {k: graph[k] for k in GraphSettings.keys()}


@pytest.mark.parametrize("values, pattern", [
    ({"max_tumours": 100}, r"graph\.max_tumours must be a number in \[1, 64\], a whole one, got 100"),
    ({"max_tumours": 0}, "graph.max_tumours"),
    ({"liver_parcels": 2.5}, "graph.liver_parcels"),
    ({"liver_parcels": True}, "graph.liver_parcels"),
    ({"ring_mm": -1.0}, r"graph\.ring_mm must be a number in \[0, 50\]"),
    ({"ring_mm": float("nan")}, "graph.ring_mm"),
    ({"ring_mm": "5"}, "graph.ring_mm"),
])
def test_graph_settings_refuse_values_out_of_bounds(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        GraphSettings(**values)
    with pytest.raises(ConfigError, match=pattern):
        GraphSettings.from_dict(values)
    assert GraphSettings.problems(values)


def test_graph_settings_round_trip_and_unknown_keys():
    settings = GraphSettings(max_tumours=64.0, liver_parcels=1, ring_mm=0)
    assert settings.to_dict() == {"max_tumours": 64, "liver_parcels": 1, "ring_mm": 0.0}
    assert type(settings.max_tumours) is int and type(settings.ring_mm) is float
    assert GraphSettings.from_dict(settings.to_dict()) == settings
    assert GraphSettings.from_dict(None) == GraphSettings.from_dict({}) == GraphSettings()
    with pytest.raises(ConfigError, match="graph must be a mapping of max_tumours, liver_parcels, ring_mm"):
        GraphSettings.from_dict({"rings": 2})
    with pytest.raises(ConfigError, match="graph must be a mapping"):
        GraphSettings.from_dict({"gw_epsilon": 0.05})  # a loss setting: only a package's metadata records it
    recorded = {"max_tumours": 4, "gw_epsilon": 0.05, "edge_weight": 1.0}
    assert GraphSettings.from_metadata(recorded) == GraphSettings(max_tumours=4)
    with pytest.raises(AttributeError):
        settings.max_tumours = 3  # frozen
