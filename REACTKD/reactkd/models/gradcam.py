"""Adapter so that MONAI's class-activation tools (``monai.visualize.GradCAM``), which call
``model(x)`` with one tensor and expect logits back, work with REACT-KD models."""

from __future__ import annotations

import torch
from torch import nn

from reactkd.models.base import ReactKDModel


class GradCamAdapter(nn.Module):
    """Wrap a REACT-KD model: ``forward(images, available=None)`` returns the logits only.

    ``available`` given at construction is (B, 3) or (3,) bool (broadcast over the batch); a call may
    override it with the ``available`` keyword, which ``GradCAM.__call__`` forwards. Use
    ``GradCAM(adapter, target_layers=adapter.cam_layer)``.

    Note: with ``class_idx=None`` MONAI scores ``logits[:, argmax]`` summed over the whole batch, which
    mixes samples when B > 1; pass one sample at a time or an explicit ``class_idx``.
    """

    def __init__(self, model: ReactKDModel, available: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.available = available
        self.cam_layer = f"model.{model.cam_layer}"

    def forward(self, images: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        flags = self.available if available is None else available
        if flags is None:
            raise ValueError("GradCamAdapter needs availability flags, at construction or per call")
        flags = flags.to(images.device)
        if flags.ndim == 1:
            flags = flags.expand(images.shape[0], -1)
        return self.model(images, flags).logits
