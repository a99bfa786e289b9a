"""CBAM3D: convolutional block attention (channel attention, then spatial attention) for volumes.

Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, extended to 3D. MONAI has a
squeeze-and-excitation block (average pooling only) but no CBAM, hence this small module.
"""

from __future__ import annotations

import torch
from torch import nn


class CBAM3D(nn.Module):
    """Channel attention (shared MLP over average- and max-pooled descriptors) followed by spatial
    attention (a convolution over the channel-wise mean and max maps), both sigmoid-gated.

    Args:
        channels: number of feature channels.
        reduction: hidden width of the channel MLP is ``max(channels // reduction, 1)``.
        spatial_kernel: odd kernel size of the spatial-attention convolution.

    After each forward, ``last_spatial_attention`` holds the spatial attention, shape
    ``(B, 1, D, H, W)`` with values in [0, 1]. It is detached: it is for display and analysis, and a
    tensor still attached to the graph would make ``copy.deepcopy(model)`` (EMA, checkpoints) fail.
    """

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"CBAM3D needs channels >= 1 and reduction >= 1, got {channels}, {reduction}")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"CBAM3D spatial_kernel must be a positive odd number, got {spatial_kernel}")
        hidden = max(channels // reduction, 1)
        # 1x1x1 convolutions act as the shared MLP and keep the tensors 5D (channels_last_3d friendly).
        self.channel_mlp = nn.Sequential(
            nn.Conv3d(channels, hidden, kernel_size=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, channels, kernel_size=1, bias=True),
        )
        self.spatial_conv = nn.Conv3d(2, 1, kernel_size=spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.last_spatial_attention: torch.Tensor | None = None

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel weights in [0, 1], shape (B, C, 1, 1, 1)."""
        avg = x.mean(dim=(2, 3, 4), keepdim=True)
        peak = x.amax(dim=(2, 3, 4), keepdim=True)
        return torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(peak))

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-voxel weights in [0, 1], shape (B, 1, D, H, W)."""
        descriptors = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_conv(descriptors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"CBAM3D expects a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
        x = x * self.channel_attention(x)
        spatial = self.spatial_attention(x)
        self.last_spatial_attention = spatial.detach()
        return x * spatial
