"""Adapter so that MONAI's class-activation tools (``monai.visualize.GradCAM``), which call
``model(x)`` with one tensor and expect logits back, work with REACT-KD models."""

from __future__ import annotations

import torch
from torch import nn

from reactkd.models.base import ModelOutput, ReactKDModel


def _input_as_leaf(_module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: the explained layer's first input becomes a leaf that requires grad, so the backward
    pass starts there. Grad-CAM needs only d score / d (layer output); with frozen weights this is what makes
    that gradient exist, without back-propagating through the whole encoder to the input."""
    if not torch.is_grad_enabled():
        return None
    return (args[0].detach().requires_grad_(True), *args[1:])


class GradCamAdapter(nn.Module):
    """Wrap a REACT-KD model: ``forward(images, available=None)`` returns the logits only, and keeps the
    whole ``ModelOutput`` in ``last_output`` so that one pass gives logits, features and the map.

    ``available`` given at construction is (B, 3) or (3,) bool (broadcast over the batch); a call may
    override it with the ``available`` keyword, which ``GradCAM.__call__`` forwards; ``region_labels`` (the
    region head's input) likewise. Use
    ``GradCAM(adapter, target_layers=adapter.cam_layer)``.

    ``backward_from_cam_layer=True`` (for inference with frozen weights) cuts the graph at the explained
    layer's input: the map is unchanged, the backward pass costs a few small layers instead of the whole
    network, and no input gradient is needed. The hook stays on the model until ``remove_hooks()``. (The
    region head also pools finer encoder scales, which bypass the explained layer: with frozen weights they
    need no gradient either.)

    Note: with ``class_idx=None`` MONAI scores ``logits[:, argmax]`` summed over the whole batch, which
    mixes samples when B > 1; pass one sample at a time or an explicit ``class_idx``.
    """

    def __init__(self, model: ReactKDModel, available: torch.Tensor | None = None,
                 backward_from_cam_layer: bool = False, region_labels: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.available = available
        self.region_labels = region_labels
        self.cam_layer = f"model.{model.cam_layer}"
        self.last_output: ModelOutput | None = None
        self._hooks = []
        if backward_from_cam_layer:
            layer = model.get_submodule(model.cam_layer)
            self._hooks.append(layer.register_forward_pre_hook(_input_as_leaf))

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def forward(self, images: torch.Tensor, available: torch.Tensor | None = None,
                region_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``region_labels`` (B, D, H, W), needed by the region head, is forwarded to the model."""
        flags = self.available if available is None else available
        if flags is None:
            raise ValueError("GradCamAdapter needs availability flags, at construction or per call")
        flags = flags.to(images.device)
        if flags.ndim == 1:
            flags = flags.expand(images.shape[0], -1)
        regions = self.region_labels if region_labels is None else region_labels
        self.last_output = self.model(images, flags, regions)
        return self.last_output.logits
