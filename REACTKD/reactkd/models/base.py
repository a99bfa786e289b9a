"""What every REACT-KD network shares: the output record, input checks and the classifier head."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reactkd.models.heads import LiverReference
from reactkd.vocabulary import MODALITIES


@dataclass
class ModelOutput:
    """Result of a model forward.

    Attributes:
        logits: (B, n_classes) unnormalised class scores.
        features: (B, C, d, h, w) feature map after the CBAM (after the branch fusion for the
            structure-function teacher): the map that region-graph nodes pool and Grad-CAM explains.
        branch_available: (B, n_branches) bool, which branches contributed to each sample's output
            (teachers only; ``None`` for single-branch models).
        scales: finer feature maps (finest first): what the region head pools, and the stride-4 map region
            graph distillation can read (``graph_map``).
    """

    logits: torch.Tensor
    features: torch.Tensor
    branch_available: torch.Tensor | None = None
    scales: tuple[torch.Tensor, ...] = ()


#: Feature maps a region graph can be built from (``graph_map``).
GRAPH_MAPS = ("deepest", "stride4")


def graph_map(output: ModelOutput, which: str) -> torch.Tensor:
    """The feature map region graph nodes pool: the deepest map after the CBAM (1/16 of the grid for the
    Swin teachers, 2 x 4 x 4 on the demo grid: a tumour and its ring share most of their pooling weight
    there) or the stride-4 maps (the student's level-2 block output; every teacher branch's, side by side
    along channels, an absent branch's zeroed): the coarsest of the extra scales in every network here."""
    if which == "deepest":
        return output.features
    if which != "stride4":
        raise ValueError(f"graph map must be one of {', '.join(GRAPH_MAPS)}, got {which!r}")
    if not output.scales:
        raise ValueError("this network returns no stride-4 map")
    coarsest = min(scale.shape[2:].numel() for scale in output.scales)
    return torch.cat([scale for scale in output.scales if scale.shape[2:].numel() == coarsest], dim=1)


def pooled_features(features: torch.Tensor) -> torch.Tensor:
    """(B, C): the deepest feature map (B, C, d, h, w) averaged over space; what the input profile's
    out-of-distribution score compares (``reactkd.ood``), in training and inference alike."""
    return features.float().mean(dim=(2, 3, 4))


def check_inputs(images: torch.Tensor, available: torch.Tensor) -> None:
    """Raise ValueError unless images is (B, 3, D, H, W) and available is a (B, 3) bool tensor."""
    if images.ndim != 5 or images.shape[1] != len(MODALITIES):
        raise ValueError(
            f"images must have shape (B, {len(MODALITIES)}, D, H, W) with channels {MODALITIES}, "
            f"got {tuple(images.shape)}"
        )
    if available.dtype != torch.bool or tuple(available.shape) != (images.shape[0], len(MODALITIES)):
        raise ValueError(
            f"available must be a bool tensor of shape ({images.shape[0]}, {len(MODALITIES)}), "
            f"got {available.dtype} {tuple(available.shape)}"
        )


def mask_absent(images: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Zero every channel whose modality is flagged absent, whatever it contains (NaN included), so that
    an output can never depend on an absent channel's content."""
    keep = available[:, :, None, None, None]
    return torch.where(keep, images, torch.zeros((), dtype=images.dtype, device=images.device))


def json_ready(config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs as JSON values (tuples become lists), so that
    ``build_model(arch, **json.loads(json.dumps(model.config)))`` rebuilds the same network."""

    def convert(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return {key: convert(value) for key, value in config.items()}


class ReactKDModel(nn.Module):
    """Common interface: ``forward(images, available, region_labels=None) -> ModelOutput`` (the region head,
    the default, needs ``region_labels``), ``attention_map()``,
    ``teacher_available(available)``, and the attributes ``architecture``, ``config`` (JSON-ready
    constructor kwargs), ``input_modalities``, ``n_classes`` and ``cam_layer``."""

    architecture: str = ""
    input_modalities: tuple[str, ...] = ()
    #: The layer Grad-CAM explains: the liver-referenced input (``heads.LiverReference``, see
    #: ``models.gradcam``), so the map covers everything the decision reads, the region head's intensity
    #: descriptors included, at the input's resolution.
    cam_layer: str = "input_layer"

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.n_classes = n_classes
        self.config: dict[str, Any] = {}
        # The input relative to the liver (no parameters): what the network reads and what Grad-CAM explains.
        self.input_layer = LiverReference()

    def teacher_available(self, available: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether this model's output for a sample is meaningful as a distillation target.
        True everywhere unless a subclass needs optional modalities."""
        return torch.ones(available.shape[0], dtype=torch.bool, device=available.device)

    def attention_map(self) -> torch.Tensor:
        """(B, 1, d, h, w) CBAM spatial attention in [0, 1] from the last forward."""
        raise NotImplementedError
