"""The region-aware head: what it pools, what it needs, and the global head kept for the ablation."""

import numpy as np
import pytest
import torch

from reactkd.errors import ConfigError
from reactkd.graph import build_regions, head_region_labels
from reactkd.graph.pooling import node_features, soft_region_masks
from reactkd.models import build_model
from reactkd.models.heads import (
    CONTRAST_UNIT,
    N_INTENSITY_DESCRIPTORS,
    LiverReference,
    RegionHead,
    intensity_descriptors,
    region_kind_index,
    size_descriptors,
)
from synthetic_images import regions_like

GRID = (16, 32, 32)


def test_head_region_labels_follow_the_region_nodes():
    labels = np.zeros((12, 24, 24), np.uint8)
    labels[1:11, 2:22, 2:22] = 1
    labels[3:6, 4:8, 4:8] = 2  # the larger tumour
    labels[7:9, 15:17, 15:17] = 2
    regions = build_regions(labels, (2.0, 1.0, 1.0), liver_parcels=3, ring_mm=2.0)
    head = head_region_labels(regions)
    assert head.dtype == np.int16 and head.shape == labels.shape
    assert set(np.unique(head).tolist()) == {0, 1, 2, 3, 4}
    assert (head[3:6, 4:8, 4:8] == 3).all() and (head[7:9, 15:17, 15:17] == 4).all()  # largest tumour first
    kinds = np.asarray(regions.kinds)[regions.node_index[head == 2]]
    assert (kinds == "ring").all() and ((head == 1) == (regions.node_index >= 0) & (head == 1)).all()
    assert ((head > 0) == (regions.node_index >= 0)).all()


def test_size_descriptors_read_the_tumour_burden():
    regions = torch.zeros(2, 4, 10, 10, dtype=torch.int16)
    regions[:, :, :, :] = 1
    regions[0, 0, 0, :4] = 3  # one tumour of 4 voxels
    regions[1, 0, 0, :4] = 3
    regions[1, 1, 0, :8] = 4  # two tumours of 12 voxels
    regions[1, 2, 0, :2] = 2
    described = size_descriptors(regions)
    torch.testing.assert_close(described[:, 0], torch.tensor([4 / 400, 12 / 400]))
    torch.testing.assert_close(described[:, 2], torch.tensor([0.0, 2 / 400]))
    torch.testing.assert_close(described[:, 3], torch.log1p(torch.tensor([1.0, 2.0])))


def test_region_head_pools_inside_each_region_kind():
    """The pooled vector holds the masked mean of each scale inside tumour, ring and liver (graph pooling)."""
    torch.manual_seed(0)
    head = RegionHead(channels=4, scale_channels=[2], n_classes=3, image_channels=2)
    deep, fine = torch.rand(2, 4, 2, 4, 4), torch.rand(2, 2, 8, 16, 16)
    images = torch.rand(2, 2, *GRID)
    regions = regions_like(images)
    vector, descriptors = head.pooled(deep, [fine], regions, images)
    assert vector.shape[1] + descriptors.shape[1] == head.in_features == 4 + 3 * (2 + 4) + 4 + 2 * 5
    kinds = region_kind_index(regions)
    torch.testing.assert_close(descriptors[:, :4], size_descriptors(regions))
    torch.testing.assert_close(descriptors[:, 4:], intensity_descriptors(images, kinds))  # the head reads what
    # the model's LiverReference gave it
    expected_fine = node_features(fine, soft_region_masks(kinds, 3, fine.shape[2:])).flatten(1)
    torch.testing.assert_close(vector[:, 4:4 + 6], expected_fine)
    torch.testing.assert_close(vector[:, :4], deep.mean(dim=(2, 3, 4)))


def test_liver_reference_and_intensity_descriptors_read_contrast_spread_and_low_share():
    regions = torch.ones(1, 4, 10, 10, dtype=torch.int16)
    regions[0, 0, :, :] = 2                      # ring
    regions[0, 1, :5, :] = 3                     # tumour: 50 voxels, half of them necrotic-dark
    images = torch.full((1, 1, 4, 10, 10), 0.5)
    images[0, 0, 0] = 0.5 + CONTRAST_UNIT        # ring one unit brighter than the liver
    images[0, 0, 1, :5, :5] = 0.5 - 3 * CONTRAST_UNIT
    images[0, 0, 1, :5, 5:] = 0.5
    regions[0, 3, 9, :] = 0                      # outside the organ: bright, and ignored
    images[0, 0, 3, 9, :] = 0.9
    referenced = LiverReference()(images, regions)
    assert torch.allclose(referenced[regions[:, None] == 1], torch.zeros(()), atol=1e-5)  # the liver reads 0
    assert (referenced[regions[:, None] == 0] == 0).all()
    assert LiverReference()(images, None) is images
    described = intensity_descriptors(referenced, region_kind_index(regions))
    assert described.shape == (1, N_INTENSITY_DESCRIPTORS)
    tumour_minus_liver, ring_minus_liver, tumour_spread, liver_spread, low_share = described[0].tolist()
    assert tumour_minus_liver == pytest.approx(-1.5, abs=1e-3) and ring_minus_liver == pytest.approx(1.0, abs=1e-3)
    assert tumour_spread == pytest.approx(1.5, abs=1e-2) and liver_spread == pytest.approx(0.0, abs=0.01)
    assert low_share == pytest.approx(0.5, abs=0.01)
    no_tumour = intensity_descriptors(referenced, region_kind_index(torch.ones_like(regions)))
    assert no_tumour[0, [0, 1, 2, 4]].abs().max() < 1e-2


def test_a_change_inside_the_tumour_moves_the_region_head_more_than_the_global_one():
    """A global average dilutes a small tumour; the region head must not."""
    images = torch.rand(1, 3, *GRID)
    regions = regions_like(images)
    changed = images.clone()
    changed[:, 0][regions[0:1] >= 3] += 0.5
    moves = {}
    for head in ("region", "global"):
        torch.manual_seed(0)
        model = build_model("student", init_filters=8, head=head).eval()
        with torch.no_grad():
            before = model(images, torch.ones(1, 3, dtype=torch.bool), regions).logits
            after = model(changed, torch.ones(1, 3, dtype=torch.bool), regions).logits
        moves[head] = float((after - before).abs().max())
    assert moves["region"] > 2 * moves["global"]


@pytest.mark.parametrize("architecture, kwargs", [("student", {"init_filters": 8}),
                                                  ("dose_teacher", {"feature_size": 12, "window_size": 4})])
def test_region_head_needs_the_regions_and_global_head_does_not(architecture, kwargs):
    images, available = torch.rand(1, 3, *GRID), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="region labels"):
        build_model(architecture, **kwargs)(images, available)
    assert build_model(architecture, head="global", **kwargs)(images, available).logits.shape == (1, 3)
    with pytest.raises(ConfigError, match="head must be one of"):
        build_model(architecture, head="attention", **kwargs)


def test_a_package_made_before_the_region_head_loads_as_a_global_head_model(tmp_path):
    import json

    from reactkd.models.heads import GlobalHead
    from reactkd.package.model_package import METADATA_FILE, load_package, save_package

    model = build_model("student", init_filters=8, head="global")
    arguments = dict(model.config)
    del arguments["head"]  # what packages written before 2026-11-27 hold
    save_package(model, tmp_path, {"name": "old", "version": "0", "architecture": "student",
                                   "architecture_args": arguments, "class_names": ["well", "moderate", "poor"],
                                   "input_modalities": ["ct", "pet_fdg", "pet_act"], "preprocessing": {}})
    assert "head" not in json.loads((tmp_path / METADATA_FILE).read_text())["architecture_args"]
    loaded = load_package(tmp_path).model
    assert isinstance(loaded.head, GlobalHead)
    images = torch.rand(1, 3, *GRID)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, torch.ones(1, 3, dtype=torch.bool)).logits,
                                   model.eval()(images, torch.ones(1, 3, dtype=torch.bool)).logits)


def test_intensity_descriptors_switch_on_the_global_head_and_off_the_region_head():
    """The ablation's arms: global pooling with the region head's descriptors, and region pooling without."""
    images, available = torch.rand(2, 3, *GRID), torch.ones(2, 3, dtype=torch.bool)
    regions = regions_like(images)
    described = build_model("student", init_filters=8, head="global", intensity_descriptors=True).eval()
    plain = build_model("student", init_filters=8, head="global").eval()
    assert described.head.linear.in_features == plain.head.linear.in_features + 4 + 3 * N_INTENSITY_DESCRIPTORS
    assert described.config["intensity_descriptors"] is True and "intensity_descriptors" not in plain.config
    changed = images.clone()
    changed[:, 0][regions >= 3] += 0.5  # a brighter tumour
    with torch.no_grad():
        move = (described(changed, available, regions).logits - described(images, available, regions).logits).abs()
    assert float(move.max()) > 0
    with pytest.raises(ValueError, match="region labels and the input image"):
        described(images, available)
    bare = build_model("student", init_filters=8, intensity_descriptors=False)
    assert bare.head.n_descriptors == 4  # size descriptors only
    rebuilt = build_model("student", **described.config)  # a package's architecture_args rebuild the same head
    assert rebuilt.head.linear.in_features == described.head.linear.in_features


@pytest.mark.parametrize("architecture, kwargs, channels", [
    ("student", {"init_filters": 8}, 32), ("student", {"init_filters": 8, "head": "global"}, 32),
    ("sf_teacher", {"feature_size": 12, "window_size": 4}, 48),
    ("dose_teacher", {"feature_size": 12, "window_size": 4}, 24)])
def test_graph_map_stride4_is_a_quarter_of_the_grid(architecture, kwargs, channels):
    from reactkd.models import graph_map

    images, available = torch.rand(1, 3, *GRID), torch.ones(1, 3, dtype=torch.bool)
    out = build_model(architecture, **kwargs)(images, available, regions_like(images))
    fine = graph_map(out, "stride4")
    assert fine.shape == (1, channels, *(n // 4 for n in GRID))
    assert graph_map(out, "deepest") is out.features
    with pytest.raises(ValueError, match="graph map must be one of"):
        graph_map(out, "stride2")
