"""Baseline for the classify benchmarks: a pipeline built the way the paper's public reference code works.

Written for this benchmark from the description of that code (nothing is copied from it), with library
calls only:
- the whole CT field of view is resampled to 64 x 224 x 224 with SimpleITK (no crop to the liver), clipped to
  the same HU window and scaled to [0, 1];
- a MONAI SegResNet *with its decoder* (out_channels=3) produces a full-resolution 3-channel map that is
  flattened into one linear head with 3 outputs (3 * 64 * 224 * 224 * 3 = 28.9 M parameters, the "25 M head");
- softmax gives the probabilities; MONAI's GradCAM on the last full-resolution decoder block gives the map
  for the predicted class;
- the map is resampled from the 64 x 224 x 224 grid back onto the whole CT grid and written as NRRD.

The weights are random: run time and memory do not depend on them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.networks.nets import SegResNet
from monai.visualize import GradCAM
from torch import nn

from reactkd.atomic import write_text_atomic
from reactkd.images.writers import write_image

REFERENCE_GRID = (64, 224, 224)  # D, H, W
CT_WINDOW = (-160.0, 240.0)
CAM_LAYER = "backbone.up_layers.2"  # last decoder block, full input resolution


class ReferenceStyleNet(nn.Module):
    """SegResNet (encoder + decoder, 3 output channels) whose full-resolution output feeds a linear head."""

    def __init__(self, grid: tuple[int, int, int] = REFERENCE_GRID, n_classes: int = 3) -> None:
        super().__init__()
        self.backbone = SegResNet(spatial_dims=3, in_channels=1, out_channels=3)
        self.head = nn.Linear(3 * int(np.prod(grid)), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(1))


class ReferencePipeline:
    """Load once, then `classify(ct, mask)`; timings in ms per step like reactkd's Classifier."""

    def __init__(self, grid: tuple[int, int, int] = REFERENCE_GRID, device: str = "cpu", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.grid = tuple(grid)
        self.device = torch.device(device)
        self.model = ReferenceStyleNet(self.grid).to(self.device).eval()

    @property
    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.model.head.parameters())

    def _resample_whole_volume(self, ct: sitk.Image) -> sitk.Image:
        size_xyz = [int(s) for s in reversed(self.grid)]
        spacing = [sp * n / m for sp, n, m in zip(ct.GetSpacing(), ct.GetSize(), size_xyz)]
        return sitk.Resample(ct, size_xyz, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing,
                             ct.GetDirection(), -1024.0, sitk.sitkFloat32)

    def classify(self, ct: sitk.Image, mask: sitk.Image) -> dict:
        """Probabilities and a Grad-CAM map on the CT grid. The mask is read but, as in the reference code,
        not used to crop."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        small = sitk.GetArrayFromImage(self._resample_whole_volume(ct))
        low, high = CT_WINDOW
        x = torch.from_numpy((np.clip(small, low, high) - low) / (high - low))[None, None].float().to(self.device)
        timings["preprocess"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        with torch.no_grad():
            probs = torch.softmax(self.model(x), dim=1)[0].cpu().numpy()
        timings["forward"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        class_index = int(np.argmax(probs))
        with torch.enable_grad():
            cam = GradCAM(nn_module=self.model, target_layers=CAM_LAYER)(x, class_idx=class_index)
        cam_np = cam[0, 0].detach().float().cpu().numpy()
        timings["gradcam"] = (time.perf_counter() - start) * 1000
        timings["forward_gradcam"] = timings["forward"] + timings["gradcam"]
        start = time.perf_counter()
        cam_image = sitk.GetImageFromArray(cam_np)
        size_xyz = [int(s) for s in reversed(self.grid)]
        cam_image.SetSpacing([sp * n / m for sp, n, m in zip(ct.GetSpacing(), ct.GetSize(), size_xyz)])
        cam_image.SetOrigin(ct.GetOrigin())
        cam_image.SetDirection(ct.GetDirection())
        native = sitk.Resample(cam_image, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        timings["to_native"] = (time.perf_counter() - start) * 1000
        timings["total"] = sum(v for k, v in timings.items() if k != "forward_gradcam")
        return {"probabilities": probs.tolist(), "class_index": class_index, "attention_gradcam": native,
                "timings_ms": timings}


def write_reference_outputs(result: dict, out_dir: str | Path) -> None:
    """The baseline's outputs: its one map (NRRD, compressed like reactkd's) and a result JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(result["attention_gradcam"], out_dir / "attention_gradcam.nrrd")
    summary = {k: v for k, v in result.items() if k != "attention_gradcam"}
    write_text_atomic(out_dir / "result.json", json.dumps(summary, indent=1) + "\n")
