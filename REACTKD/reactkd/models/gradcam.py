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
    ``grad_cam(adapter)`` (MONAI's GradCAM without its flipping post-processing).

    ``backward_from_cam_layer=True`` (for inference with frozen weights) cuts the graph at the explained
    layer's input: the map is unchanged and the backward pass stops at that layer, with no gradient for
    anything before it. How much that saves depends on where the layer sits: the default explained layer is
    the liver-referenced input (``ReactKDModel.cam_layer``), so the backward still runs through the whole
    network; for a deeper layer it would cost only the layers above it. The hook stays on the model until
    ``remove_hooks()``.

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
        if torch.is_grad_enabled() and not images.requires_grad:
            # The explained layer (the liver-referenced input) has no weights before it: without this its
            # output would need no grad and Grad-CAM's hooks would record nothing.
            images = images.detach().requires_grad_(True)
        self.last_output = self.model(images, flags, regions)
        return self.last_output.logits


def _keep_orientation(cam: torch.Tensor) -> torch.Tensor:
    """Grad-CAM post-processing that keeps high evidence high (callers scale to [0, 1] themselves)."""
    return cam


def grad_cam(adapter: GradCamAdapter):
    """HiResCAM (Draelos & Carin, 2020) on the adapter's explained layer, built on MONAI's ``GradCAM`` (its
    hooks, upsampling and class selection): ReLU(sum over channels of gradient x activation).

    Grad-CAM proper averages each channel's gradient over space first, which is exact only for a head that
    averages the whole map; the region head pools inside tumour, ring and liver, so the spatial average smears
    the evidence over the crop (on the demo case none of the map's mass fell in tumour + ring; docs/results.md). The
    element-wise product keeps it where the head read it. MONAI's default post-processing maps (min, max) to
    (1, 0), flipping the map; it is replaced by the identity (callers scale to [0, 1]).
    """
    from monai.visualize import GradCAM

    class HiResCAM(GradCAM):
        def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
            _, activations, gradients = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            evidence = (activations[layer_idx] * gradients[layer_idx]).sum(1, keepdim=True)
            return torch.relu(evidence)

    return HiResCAM(nn_module=adapter, target_layers=adapter.cam_layer, postprocessing=_keep_orientation)
