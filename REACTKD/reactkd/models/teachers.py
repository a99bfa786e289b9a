"""Teachers: the structure-function (PET/CT, two branches) and the dose-aware (CT only) networks.

Both use MONAI's Swin transformer encoder (SwinUNETR's ``swinViT``) and the CBAM3D module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from reactkd.errors import GeometryError
from reactkd.models.base import (
    ModelOutput,
    ReactKDModel,
    check_inputs,
    json_ready,
    mask_absent,
)
from reactkd.models.cbam import CBAM3D
from reactkd.models.heads import build_head, check_head

#: The structure-function teacher's branches: name -> index of its PET channel in reactkd.MODALITIES.
SF_BRANCHES = {"fdg": 1, "act": 2}


class SwinFeatureEncoder(nn.Module):
    """MONAI Swin transformer encoder returning its deepest feature map.

    With ``feature_stride=16`` (default) the final patch merging is removed: in SwinUNETR it only makes
    the decoder's bottleneck, and dropping it keeps the full-depth features at 1/16 of the input size
    (4 x 8 x 8 for a 64 x 128 x 128 grid instead of 2 x 4 x 4), which region-graph pooling needs, and
    saves its parameters. ``feature_stride=32`` keeps the original encoder output.
    Output channels: ``8 * feature_size`` (stride 16) or ``16 * feature_size`` (stride 32).
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        feature_stride: int = 16,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin encoder needs 4 stages, got depths={depths} num_heads={num_heads}")
        if feature_stride not in (16, 32):
            raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
        if feature_size % 12 != 0:
            # MONAI's SwinUNETR rule: keeps every stage's width divisible by its head count.
            raise ValueError(f"feature_size must be divisible by 12, got {feature_size}")
        self.swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=feature_size,
            window_size=(window_size,) * 3,
            patch_size=(2, 2, 2),
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
        )
        if feature_stride == 16:
            # MONAI's BasicLayer.forward skips downsampling when `downsample is None` (its no-downsample mode).
            self.swin.layers4[0].downsample = None
        self.feature_stride = feature_stride
        self.out_channels = feature_size * (8 if feature_stride == 16 else 16)
        self.stride4_channels = feature_size * 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(deepest map, stride-4 map): the region head pools both."""
        if any(size % self.feature_stride for size in x.shape[2:]):
            raise GeometryError(
                f"the Swin encoder needs every spatial size divisible by {self.feature_stride}, "
                f"got {tuple(x.shape[2:])}"
            )
        stages = self.swin(x, normalize=True)
        return stages[-1], stages[1]


class GatedBranchFusion(nn.Module):
    """Per-branch 1x1x1 projection, sum over the branches available for each sample, sigmoid gate.

    ``gate = sigmoid(conv1x1(fused))``, output ``fused * gate``. Absent branches are removed with
    ``torch.where`` (not a multiplication), so NaN or anything else in them cannot leak through.
    """

    def __init__(self, in_channels: int, out_channels: int, n_branches: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Conv3d(in_channels, out_channels, kernel_size=1) for _ in range(n_branches)
        )
        self.gate = nn.Conv3d(out_channels, out_channels, kernel_size=1)

    def forward(self, stacked_features: torch.Tensor, branch_mask: torch.Tensor) -> torch.Tensor:
        """stacked_features: (n_branches * B, C, d, h, w), branch after branch on the batch axis (one
        tensor, so that full backward hooks such as Grad-CAM's see an input that requires grad);
        branch_mask: (B, n_branches) bool."""
        branch_features = stacked_features.chunk(len(self.projections), dim=0)
        fused = None
        for index, (projection, features) in enumerate(zip(self.projections, branch_features)):
            keep = branch_mask[:, index, None, None, None, None]
            projected = projection(features)
            term = torch.where(keep, projected, torch.zeros((), dtype=projected.dtype, device=projected.device))
            fused = term if fused is None else fused + term
        return fused * torch.sigmoid(self.gate(fused))


class StructureFunctionTeacher(ReactKDModel):
    """Two-branch PET/CT teacher: FDG branch on (ct, pet_fdg), ACT branch on (ct, pet_act).

    Each branch has its own Swin encoder; ONE CBAM3D (same weights) serves both branches, so that the
    attention is consistent across tracers; then per-branch projection, sum over the branches available
    for each sample, sigmoid gate, and a head: region-aware (default; pools the fused map and each branch's
    stride-4 map, zeroed for absent branches) or global pooling (``head="global"``).

    Both encoders run on the whole batch and absent branches are masked out per sample. Running each
    encoder only on the samples that have its tracer would save the compute of absent branches, but
    needs a device-to-host sync (``nonzero``) and data-dependent shapes, breaks when a batch lacks a
    tracer entirely (empty batch, DDP unused parameters), and 3D batches are small (2 to 8), so the
    saving is at most a few samples; static shapes win.

    A sample with neither PET (CT only) goes through both branches with zero PET channels, so the output
    is always defined; ``teacher_available`` is False for it and the distillation loss leaves it out.
    """

    architecture = "sf_teacher"
    input_modalities = ("ct", "pet_fdg", "pet_act")

    def __init__(
        self,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        n_classes: int = 3,
        window_size: int = 7,
        feature_stride: int = 16,
        fusion_channels: int | None = None,
        cbam_reduction: int = 8,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        use_checkpoint: bool = False,
        head: str = "region",
    ) -> None:
        super().__init__(n_classes)
        check_head(head)
        self.config = json_ready(dict(
            feature_size=feature_size, depths=depths, num_heads=num_heads, n_classes=n_classes,
            window_size=window_size, feature_stride=feature_stride, fusion_channels=fusion_channels,
            cbam_reduction=cbam_reduction, drop_path_rate=drop_path_rate, dropout=dropout,
            use_checkpoint=use_checkpoint, head=head,
        ))
        self.encoders = nn.ModuleDict({
            name: SwinFeatureEncoder(2, feature_size, depths, num_heads, window_size, feature_stride,
                                     drop_path_rate, use_checkpoint)
            for name in SF_BRANCHES
        })
        encoder_channels = self.encoders["fdg"].out_channels
        out_channels = fusion_channels or encoder_channels
        self.cbam = CBAM3D(encoder_channels, reduction=cbam_reduction)
        self.fusion = GatedBranchFusion(encoder_channels, out_channels, len(SF_BRANCHES))
        stride4 = self.encoders["fdg"].stride4_channels
        self.head = build_head(head, out_channels, [stride4] * len(SF_BRANCHES), n_classes, dropout,
                               image_channels=1 + len(SF_BRANCHES))
        self.branch_names = tuple(SF_BRANCHES)
        self._last_branch_mask: torch.Tensor | None = None

    def branch_mask(self, available: torch.Tensor) -> torch.Tensor:
        """(B, 2) bool: branches used per sample (both when neither PET is present)."""
        pet = available[:, list(SF_BRANCHES.values())]
        return pet | ~pet.any(dim=1, keepdim=True)

    def teacher_available(self, available: torch.Tensor) -> torch.Tensor:
        """(B,) bool: True when the sample has at least one PET."""
        return available[:, list(SF_BRANCHES.values())].any(dim=1)

    def forward(self, images: torch.Tensor, available: torch.Tensor,
                region_labels: torch.Tensor | None = None) -> ModelOutput:
        check_inputs(images, available)
        images = mask_absent(self.input_layer(images, region_labels), available)
        mask = self.branch_mask(available)
        encoded = [
            self.encoders[name](images[:, [0, channel]]) for name, channel in SF_BRANCHES.items()
        ]
        # One CBAM call over both branches stacked on the batch axis: the same weights by construction,
        # and its stored attention covers both branches.
        features = self.fusion(self.cbam(torch.cat([deep for deep, _ in encoded], dim=0)), mask)
        zero = torch.zeros((), dtype=features.dtype, device=features.device)
        scales = tuple(torch.where(mask[:, index, None, None, None, None], fine, zero.to(fine.dtype))
                       for index, (_, fine) in enumerate(encoded))
        self._last_branch_mask = mask
        return ModelOutput(logits=self.head(features, scales, region_labels, images), features=features,
                           branch_available=mask, scales=scales)

    def attention_map(self) -> torch.Tensor:
        """(B, 1, d, h, w): the shared CBAM's spatial attention averaged over each sample's branches."""
        attention, mask = self.cbam.last_spatial_attention, self._last_branch_mask
        if attention is None or mask is None:
            raise RuntimeError("attention_map() needs a forward pass first")
        per_branch = torch.stack(attention.chunk(mask.shape[1], dim=0), dim=1)  # (B, n_branches, 1, d, h, w)
        weights = mask.to(per_branch.dtype)[:, :, None, None, None, None]
        return (per_branch * weights).sum(dim=1) / weights.sum(dim=1)


class DoseAwareTeacher(ReactKDModel):
    """CT-only teacher (trained on simulated low-dose CT): Swin encoder, CBAM3D, region-aware (default) or
    global head."""

    architecture = "dose_teacher"
    input_modalities = ("ct",)

    def __init__(
        self,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        n_classes: int = 3,
        window_size: int = 7,
        feature_stride: int = 16,
        cbam_reduction: int = 8,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        use_checkpoint: bool = False,
        head: str = "region",
    ) -> None:
        super().__init__(n_classes)
        check_head(head)
        self.config = json_ready(dict(
            feature_size=feature_size, depths=depths, num_heads=num_heads, n_classes=n_classes,
            window_size=window_size, feature_stride=feature_stride, cbam_reduction=cbam_reduction,
            drop_path_rate=drop_path_rate, dropout=dropout, use_checkpoint=use_checkpoint, head=head,
        ))
        self.encoder = SwinFeatureEncoder(1, feature_size, depths, num_heads, window_size, feature_stride,
                                          drop_path_rate, use_checkpoint)
        self.cbam = CBAM3D(self.encoder.out_channels, reduction=cbam_reduction)
        self.head = build_head(head, self.encoder.out_channels, [self.encoder.stride4_channels], n_classes,
                               dropout, image_channels=1)

    def forward(self, images: torch.Tensor, available: torch.Tensor,
                region_labels: torch.Tensor | None = None) -> ModelOutput:
        check_inputs(images, available)
        images = self.input_layer(images, region_labels)
        deepest, stride4 = self.encoder(images[:, :1])
        features = self.cbam(deepest)
        return ModelOutput(logits=self.head(features, (stride4,), region_labels, images[:, :1]),
                           features=features, scales=(stride4,))

    def attention_map(self) -> torch.Tensor:
        """(B, 1, d, h, w) CBAM spatial attention from the last forward."""
        if self.cbam.last_spatial_attention is None:
            raise RuntimeError("attention_map() needs a forward pass first")
        return self.cbam.last_spatial_attention
