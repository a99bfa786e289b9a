"""Test helper: small, untrained model packages (real safetensors + metadata, checksummed)."""

from __future__ import annotations

from pathlib import Path

from reactkd.models import build_model
from reactkd.package.model_package import save_package
from reactkd.preprocessing import PreprocessConfig


def make_package(folder: Path, architecture: str = "student", grid=(16, 32, 32), seed: int = 0,
                 extra_metadata: dict | None = None, **kwargs) -> Path:
    import torch

    torch.manual_seed(seed)
    defaults = {"student": {"init_filters": 8, "blocks_down": [1, 1, 1, 1]},
                "sf_teacher": {"feature_size": 12, "depths": [1, 1, 1, 1]},
                "dose_teacher": {"feature_size": 12, "depths": [1, 1, 1, 1]}}[architecture]
    model = build_model(architecture, **{**defaults, **kwargs})
    metadata = {"name": f"test-{architecture}", "version": "0.0.1", "architecture": architecture,
                "architecture_args": model.config, "class_names": ["well", "moderate", "poor"],
                "input_modalities": list(model.input_modalities),
                "preprocessing": PreprocessConfig(grid=tuple(grid)).to_dict(),
                "stage": {"student": "student", "sf_teacher": "teacher-sf", "dose_teacher": "teacher-dose"}[architecture],
                "graph": {"max_tumours": 8, "liver_parcels": 4, "ring_mm": 5.0}, **(extra_metadata or {})}
    return save_package(model, folder, metadata=metadata)
