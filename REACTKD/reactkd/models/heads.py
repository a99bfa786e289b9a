"""Classification heads: global pooling (the paper's) and region-aware pooling (ours, the default).

After the liver crop a tumour covers under 1 % of the grid, so a global average dilutes it away (the PET/CT
teacher stayed at 0.68 macro AUC with it). The region head pools each encoder scale inside three
region kinds (tumour(s), peritumoral ring, remaining liver) with the same masked average the region graph
uses (``reactkd.graph.pooling``), adds global pooling of the deepest map and size descriptors the mask
carries, and ends in a normalised linear layer. Next to the learned features it reads first-order intensity
statistics of the input image inside the same regions (tumour and ring relative to the liver, spreads, share
of low voxels): the cues a radiologist reads first. A network left to find a 5-25 HU contrast on its own
through per-sample group norms did not (CT-only macro AUC 0.57; docs/results.md).

Region input: a ``region_labels`` volume on the model grid, (B, D, H, W) integer, 0 outside every region,
1 liver parenchyma, 2 peritumoral ring, 3 + k tumour component k (``reactkd.vocabulary``'s LIVER_LABEL, RING_LABEL,
FIRST_TUMOUR_LABEL; see ``graph.regions.head_region_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reactkd.graph.pooling import node_features, soft_region_mask_pyramid
from reactkd.vocabulary import FIRST_TUMOUR_LABEL, HEADS, LIVER_LABEL, RING_LABEL

REGION_KINDS = ("tumour", "ring", "liver")
#: Size descriptors: tumour share of the organ, its log, ring share, log(1 + tumour count).
N_DESCRIPTORS = 4
#: Intensity descriptors per input channel: tumour and ring mean minus liver mean, tumour and liver spread,
#: share of tumour voxels LOW_SHARE_UNITS below the liver mean (necrosis on CT).
N_INTENSITY_DESCRIPTORS = 5
#: Unit of the liver-referenced input (``LiverReference``): 0.05 of the normalised image is 20 HU in the
#: default CT window of 400 HU, so the descriptors are O(1) and a linear layer can use them from its first step.
CONTRAST_UNIT = 0.05
LOW_SHARE_UNITS = 1.5


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return head


def region_kind_index(region_labels: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) region labels -> kind ids in REGION_KINDS order (0 tumour, 1 ring, 2 liver, -1 none)."""
    labels = region_labels.to(torch.int64)
    kind = torch.full_like(labels, -1)
    kind = torch.where(labels >= FIRST_TUMOUR_LABEL, 0, kind)
    kind = torch.where(labels == RING_LABEL, 1, kind)
    return torch.where(labels == LIVER_LABEL, 2, kind)


def size_descriptors(region_labels: torch.Tensor) -> torch.Tensor:
    """(B, N_DESCRIPTORS) float32: what the mask itself says about the tumour burden."""
    labels = region_labels.flatten(1).to(torch.int64)
    tumour = (labels >= FIRST_TUMOUR_LABEL).sum(1).float()
    ring = (labels == RING_LABEL).sum(1).float()
    organ = (labels > 0).sum(1).float().clamp_min(1.0)
    count = (labels.amax(dim=1) - (FIRST_TUMOUR_LABEL - 1)).clamp_min(0).float()
    share = tumour / organ
    return torch.stack([share, torch.log(share + 1e-4), ring / organ, torch.log1p(count)], dim=1)


def region_means(values: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, mean of squares, voxel count) of each channel inside each region kind: (B, C, 3) twice, (B, 3)."""
    flat = kinds.flatten(1)
    masks = torch.stack([flat == k for k in range(len(REGION_KINDS))], dim=1).to(values.dtype)  # (B, 3, N)
    counts = masks.sum(-1)
    mean = torch.einsum("bcn,bkn->bck", values, masks) / counts.clamp_min(1.0)[:, None]
    square = torch.einsum("bcn,bkn->bck", values * values, masks) / counts.clamp_min(1.0)[:, None]
    return mean, square, counts


class LiverReference(nn.Module):
    """The organ relative to the liver: inside the liver, rings and tumours, each channel minus its mean over
    the liver parenchyma, in units of CONTRAST_UNIT (20 HU for CT in the default window); 0 (the liver's
    level) everywhere else. Radiologists read HCC attenuation and uptake against the liver, and grade has
    nothing to do with fat or bone around it: with them in view, 62 % of the evidence map of a CT student lay
    outside the organ. The encoder and the region head's descriptors read this, and Grad-CAM
    explains this layer, so its map (gradient x value) is evidence against the parenchyma. Without region
    labels (global head) the input passes unchanged."""

    def forward(self, images: torch.Tensor, region_labels: torch.Tensor | None = None) -> torch.Tensor:
        if region_labels is None:
            return images
        kinds = region_kind_index(region_labels.to(images.device))
        mean, _, _ = region_means(images.float().flatten(2), kinds)
        liver = mean[:, :, 2, None, None, None].to(images.dtype)
        organ = (kinds >= 0)[:, None]
        return torch.where(organ, (images - liver) * (1.0 / CONTRAST_UNIT), torch.zeros((), dtype=images.dtype,
                                                                                     device=images.device))


def intensity_descriptors(referenced: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """(B, C * N_INTENSITY_DESCRIPTORS) float32 statistics of each channel of a ``LiverReference`` output
    inside tumour / ring / liver (``kinds`` from ``region_kind_index``); an empty region gives zeros."""
    values = referenced.float().flatten(2)                                            # (B, C, N)
    mean, square, counts = region_means(values, kinds)
    present = (counts > 0)[:, None]                                                   # (B, 1, 3)
    spread = (square - mean * mean).clamp_min(0.0).add(1e-6).sqrt() * present
    tumour, ring, liver = 0, 1, 2
    # Soft count of tumour voxels well below the liver (a hard threshold has no gradient and flickers).
    in_tumour = (kinds.flatten(1) == tumour).to(values.dtype)[:, None]
    low = torch.sigmoid((mean[:, :, liver, None] - LOW_SHARE_UNITS - values) / 0.2)
    low_share = (low * in_tumour).sum(-1) / counts[:, None, tumour].clamp_min(1.0)
    described = torch.stack([(mean[:, :, tumour] - mean[:, :, liver]) * present[:, :, tumour],
                             (mean[:, :, ring] - mean[:, :, liver]) * present[:, :, ring],
                             spread[:, :, tumour], spread[:, :, liver], low_share], dim=2)
    return described.flatten(1)


class GlobalHead(nn.Module):
    """Global average pooling of the deepest map, optional dropout, linear layer (the paper's head).

    With ``image_channels`` > 0 the linear layer also reads the size and intensity descriptors the region
    head reads (``RegionHead``), so an ablation can tell region pooling from the descriptors."""

    def __init__(self, channels: int, n_classes: int, dropout: float = 0.0, image_channels: int = 0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.n_descriptors = N_DESCRIPTORS + int(image_channels) * N_INTENSITY_DESCRIPTORS if image_channels else 0
        self.linear = nn.Linear(channels + self.n_descriptors, n_classes)

    def forward(self, features: torch.Tensor, scales: Sequence[torch.Tensor] = (),
                region_labels: torch.Tensor | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.dropout(self.pool(features).flatten(1))
        if not self.n_descriptors:
            return self.linear(pooled)
        if region_labels is None or images is None:
            raise ValueError("a global head with descriptors needs the region labels and the input image")
        kinds = region_kind_index(region_labels.to(features.device))
        descriptors = torch.cat([size_descriptors(region_labels).to(features.device),
                                 intensity_descriptors(images, kinds)], dim=1)
        return self.linear(torch.cat([pooled.float(), descriptors], dim=1)).to(features.dtype)


class RegionHead(nn.Module):
    """Global pool of the deepest map + masked average pooling of every scale (deepest included) inside
    tumour / ring / liver -> LayerNorm -> dropout, then the size and intensity descriptors (not normalised
    across the vector: their scale is their meaning) -> linear.

    ``scale_channels`` lists the channels of the extra scales passed to ``forward`` (finest first); the
    deepest map is always pooled too. ``image_channels`` is the number of input channels the intensity
    descriptors read. An absent region kind (no ring around a tumour touching the capsule) pools to zeros,
    as in the region graph.
    """

    def __init__(self, channels: int, scale_channels: Sequence[int], n_classes: int, dropout: float = 0.0,
                 image_channels: int = 1) -> None:
        super().__init__()
        self.scale_channels = tuple(int(c) for c in scale_channels)
        learned = channels + len(REGION_KINDS) * (channels + sum(self.scale_channels))
        self.n_descriptors = N_DESCRIPTORS + int(image_channels) * N_INTENSITY_DESCRIPTORS
        self.norm = nn.LayerNorm(learned)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(learned + self.n_descriptors, n_classes)
        self.in_features = learned + self.n_descriptors

    def pooled(self, features: torch.Tensor, scales: Sequence[torch.Tensor], region_labels: torch.Tensor,
               images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(learned (B, ...), descriptors (B, n_descriptors)) before the normalisation (for tests and
        inspection)."""
        if region_labels is None:
            raise ValueError("the region head needs the region labels of the case (liver, ring, tumours)")
        if len(scales) != len(self.scale_channels):
            raise ValueError(f"expected {len(self.scale_channels)} extra scale(s), got {len(scales)}")
        maps = [*scales, features]
        kinds = region_kind_index(region_labels.to(features.device))
        masks = soft_region_mask_pyramid(kinds, len(REGION_KINDS), [m.shape[2:] for m in maps])
        parts = [features.float().mean(dim=(2, 3, 4))]
        parts += [node_features(m.float(), mask).flatten(1) for m, mask in zip(maps, masks)]
        descriptors = [size_descriptors(region_labels).to(features.device)]
        n_intensity = self.n_descriptors - N_DESCRIPTORS
        if n_intensity:
            if images is None or images.shape[2:] != kinds.shape[1:]:
                raise ValueError("the region head needs the liver-referenced input on the grid of the region labels")
            described = intensity_descriptors(images, kinds)
            if described.shape[1] != n_intensity:
                raise ValueError(f"the head reads {n_intensity // N_INTENSITY_DESCRIPTORS} image channel(s), "
                                 f"got {images.shape[1]}")
            descriptors.append(described)
        return torch.cat(parts, dim=1), torch.cat(descriptors, dim=1)

    def forward(self, features: torch.Tensor, scales: Sequence[torch.Tensor] = (),
                region_labels: torch.Tensor | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        learned, descriptors = self.pooled(features, scales, region_labels, images)
        vector = torch.cat([self.dropout(self.norm(learned)), descriptors], dim=1)
        return self.linear(vector).to(features.dtype)


def build_head(head: str, channels: int, scale_channels: Sequence[int], n_classes: int,
               dropout: float, image_channels: int = 1, descriptors: bool | None = None) -> nn.Module:
    """The head by name. ``descriptors`` (None: the head's own default, on for region and off for global,
    the paper's) says whether it reads the intensity descriptors of ``image_channels`` input channels."""
    if check_head(head) == "global":
        return GlobalHead(channels, n_classes, dropout, image_channels if descriptors else 0)
    return RegionHead(channels, scale_channels, n_classes, dropout, 0 if descriptors is False else image_channels)
