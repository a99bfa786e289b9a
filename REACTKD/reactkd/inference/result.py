"""The result of one classification as a plain dataclass (torch-free, so Slicer's process can hold one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import SimpleITK as sitk

from reactkd.errors import ReactKDError

if TYPE_CHECKING:
    from reactkd.preprocessing import PreprocessedCase


@dataclass
class ClassificationResult:
    """Grade, probabilities, both attention maps on the native CT grid and the region graph of one case.

    Args:
        grade: the predicted grade (one of `class_names`).
        class_index: its index in `class_names`.
        class_names: the model's grades, in ordinal order.
        probabilities: grade -> probability (they sum to 1).
        attention_cbam: the CBAM attention map on the CT grid.
        attention_gradcam: the Grad-CAM map on the CT grid.
        graph: the region graph (``graph.json`` layout).
        model: the model package's name, version and checksum.
        device: the device the model ran on.
        inputs: the modalities that were given.
        timings_ms: stage -> milliseconds.
        warnings: what the user should know (e.g. a CUDA out-of-memory retry on the CPU).
        preprocessed: the preprocessed case (in-process callers only; never serialised).
    """

    grade: str
    class_index: int
    class_names: list[str]
    probabilities: dict[str, float]
    attention_cbam: sitk.Image
    attention_gradcam: sitk.Image
    graph: dict
    model: dict
    device: str
    inputs: list[str]
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    preprocessed: PreprocessedCase | None = None

    def to_json(self) -> dict:
        """The summary written as ``result.json`` (no maps, no graph)."""
        return {"grade": self.grade, "class_index": self.class_index, "class_names": self.class_names,
                "probabilities": self.probabilities, "model": self.model, "device": self.device,
                "inputs": self.inputs, "timings_ms": self.timings_ms, "warnings": self.warnings}

    @classmethod
    def from_json(cls, summary: dict, attention_cbam: sitk.Image, attention_gradcam: sitk.Image,
                  graph: dict) -> ClassificationResult:
        """The inverse of `to_json` plus the maps and graph (what another process wrote, `read_outputs`)."""
        fields = ("grade", "class_index", "class_names", "probabilities", "model", "device", "inputs", "timings_ms")
        missing = [name for name in fields if name not in summary]
        if missing:
            raise ReactKDError(f"result summary lacks {', '.join(missing)}")
        return cls(**{name: summary[name] for name in fields}, warnings=list(summary.get("warnings", [])),
                   attention_cbam=attention_cbam, attention_gradcam=attention_gradcam, graph=graph)
