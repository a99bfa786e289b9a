"""Student: a light SegResNet-style encoder on CT plus optional PET, with CBAM3D at the deepest stage."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.segresnet_ds import SegResEncoder
from torch import nn

from reactkd.models.base import (
    ModelOutput,
    ReactKDModel,
    check_inputs,
    json_ready,
    mask_absent,
)
from reactkd.models.cbam import CBAM3D
from reactkd.models.heads import build_head, check_head
from reactkd.vocabulary import MODALITIES

#: Encoder levels whose block outputs the region head pools besides the deepest map (strides 1 and 4):
#: the finest level sees the 5-17 HU tumour-to-liver contrast before any downsampling blurs it.
REGION_HEAD_LEVELS = (0, 2)


class Student(ReactKDModel):
    """MONAI ``SegResEncoder`` (SegResNet encoder: residual blocks, stride-2 convolutions, group norm),
    a closing norm + ReLU (the blocks are pre-activation), CBAM3D and a head: region-aware (default: masked
    pooling of levels 0 and 2 and of the deepest map inside tumour / ring / liver, see ``models.heads``) or
    global pooling (``head="global"``, the paper's). ``intensity_descriptors`` turns the head's intensity
    descriptors on or off (None: the head's default, on for region and off for global).

    Inputs: the first ``in_channels`` channels of ``reactkd.MODALITIES`` (3: CT, FDG, ACT; 1: CT only).
    Absent channels are zeroed whatever they contain. The availability flags of the optional channels
    enter as a learned per-channel offset added after the first convolution: the same as constant flag
    channels concatenated to the input, minus the border artefacts zero padding gives constant channels,
    and without materialising two more full-size channels. CT alone is the deployment case.

    Defaults (16 filters, blocks (1, 2, 2, 2)): about 2.64 M parameters, features of 128 channels at
    1/8 of the input size. SegResNet's usual (1, 2, 2, 4) would put 4.4 M parameters in the encoder,
    over the 3 M budget, almost all in the deepest stage.
    """

    architecture = "student"

    def __init__(
        self,
        in_channels: int = 3,
        init_filters: int = 16,
        blocks_down: Sequence[int] = (1, 2, 2, 2),
        n_classes: int = 3,
        norm_groups: int = 8,
        cbam_reduction: int = 8,
        dropout: float = 0.0,
        head: str = "region",
        intensity_descriptors: bool | None = None,
    ) -> None:
        super().__init__(n_classes)
        check_head(head)
        if not 1 <= in_channels <= len(MODALITIES):
            raise ValueError(f"in_channels must be 1 to {len(MODALITIES)}, got {in_channels}")
        if init_filters % norm_groups:
            raise ValueError(f"init_filters ({init_filters}) must be divisible by norm_groups ({norm_groups})")
        self.config = json_ready(dict(
            in_channels=in_channels, init_filters=init_filters, blocks_down=blocks_down, n_classes=n_classes,
            norm_groups=norm_groups, cbam_reduction=cbam_reduction, dropout=dropout,
            head=head, **({} if intensity_descriptors is None else {"intensity_descriptors": intensity_descriptors}),
        ))
        self.input_modalities = MODALITIES[:in_channels]
        norm = ("group", {"num_groups": norm_groups})
        self.encoder = SegResEncoder(
            spatial_dims=3, init_filters=init_filters, in_channels=in_channels, act="relu", norm=norm,
            blocks_down=tuple(blocks_down),
        )
        self.availability_embedding = (
            nn.Linear(in_channels - 1, init_filters, bias=False) if in_channels > 1 else None
        )
        channels = init_filters * 2 ** (len(blocks_down) - 1)
        self.final_norm = get_norm_layer(name=norm, spatial_dims=3, channels=channels)
        self.final_act = get_act_layer("relu")
        self.cbam = CBAM3D(channels, reduction=cbam_reduction)
        # The levels' outputs are returned as ``scales`` whatever the head (region graph distillation may read
        # the stride-4 one); only the region head pools them.
        self.head_levels = tuple(level for level in REGION_HEAD_LEVELS if level < len(blocks_down))
        pooled_levels = self.head_levels if head == "region" else ()
        self.head = build_head(head, channels, [init_filters * 2 ** level for level in pooled_levels],
                               n_classes, dropout, image_channels=in_channels, descriptors=intensity_descriptors)
        self.out_channels = channels

    def encode(self, images: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Deepest encoder stage before the CBAM, (B, C, D/2^(n-1), H/..., W/...), and the block outputs of
        the levels the head pools."""
        n = len(self.input_modalities)
        x = self.encoder.conv_init(mask_absent(images, available)[:, :n])
        if self.availability_embedding is not None:
            offset = self.availability_embedding(available[:, 1:n].to(x.dtype))
            x = x.add_(offset[:, :, None, None, None])  # in place: 10x faster than x + offset at full size
        # SegResEncoder's own loop over its levels, kept so the offset can go in after conv_init.
        scales = []
        for index, level in enumerate(self.encoder.layers):
            x = level["blocks"](x)
            if index in self.head_levels:
                scales.append(x)
            x = level["downsample"](x)
        return self.final_act(self.final_norm(x)), scales

    def forward(self, images: torch.Tensor, available: torch.Tensor,
                region_labels: torch.Tensor | None = None) -> ModelOutput:
        check_inputs(images, available)
        images = self.input_layer(images, region_labels)
        deepest, scales = self.encode(images, available)
        features = self.cbam(deepest)
        logits = self.head(features, scales, region_labels,
                           mask_absent(images, available)[:, :len(self.input_modalities)])
        return ModelOutput(logits=logits, features=features, scales=tuple(scales))

    def attention_map(self) -> torch.Tensor:
        """(B, 1, d, h, w) CBAM spatial attention from the last forward."""
        if self.cbam.last_spatial_attention is None:
            raise RuntimeError("attention_map() needs a forward pass first")
        return self.cbam.last_spatial_attention
