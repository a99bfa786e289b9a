"""The result of one classification as a plain dataclass (torch-free, so Slicer's process can hold one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import SimpleITK as sitk

from reactkd.errors import ReactKDError

if TYPE_CHECKING:
    from reactkd.preprocessing import PreprocessedCase

#: How far to trust the answer (``reactkd.conformal``, ``reactkd.inference.what_if``).
TRUST_FIELDS = ("prediction_set", "prediction_set_level", "prediction_set_text", "what_if", "out_of_distribution")


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
        warnings: what the user should know (e.g. a CUDA out-of-memory retry on the CPU, a tiny tumour).
        prediction_set: the grades of the conformal prediction set (None when the package has no calibration).
        prediction_set_level: its nominal coverage (e.g. 0.9), or None.
        prediction_set_text: the set in plain words ("refer: ..." for more than one grade), or why there is none.
        what_if: the grade on every input combination the model reads and the case has (``inference.what_if``).
        out_of_distribution: the case's distance to the training cases and its threshold (``reactkd.ood``).
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
    prediction_set: list[str] | None = None
    prediction_set_level: float | None = None
    prediction_set_text: str = "no prediction set"
    what_if: dict = field(default_factory=dict)
    out_of_distribution: dict = field(default_factory=dict)
    preprocessed: PreprocessedCase | None = None

    def to_json(self) -> dict:
        """The summary written as ``result.json`` (no maps, no graph)."""
        return {"grade": self.grade, "class_index": self.class_index, "class_names": self.class_names,
                "probabilities": self.probabilities, "model": self.model, "device": self.device,
                "inputs": self.inputs, "timings_ms": self.timings_ms, "warnings": self.warnings,
                **{name: getattr(self, name) for name in TRUST_FIELDS}}

    def trust_lines(self) -> list[str]:
        """The prediction set, the what-if rows and the modalities not given, in plain words: what the command
        line prints under the grade and the Slicer module shows beside it."""
        lines = [f"prediction set: {self.prediction_set_text}"]
        what_if = self.what_if or {}
        lines += [f"what if {row['inputs']}: {row['grade']} ({probabilities_text(row['probabilities'])})"
                  for row in what_if.get("rows", [])]
        if what_if.get("missing_modalities"):
            lines.append(f"not given (the model reads them): {', '.join(what_if['missing_modalities'])}")
        return lines

    @classmethod
    def from_json(cls, summary: dict, attention_cbam: sitk.Image, attention_gradcam: sitk.Image,
                  graph: dict) -> ClassificationResult:
        """The inverse of `to_json` plus the maps and graph (what another process wrote, `read_outputs`)."""
        fields = ("grade", "class_index", "class_names", "probabilities", "model", "device", "inputs", "timings_ms")
        missing = [name for name in fields if name not in summary]
        if missing:
            raise ReactKDError(f"result summary lacks {', '.join(missing)}")
        trust = {name: summary[name] for name in TRUST_FIELDS if name in summary}  # absent from older results
        return cls(**{name: summary[name] for name in fields}, warnings=list(summary.get("warnings", [])), **trust,
                   attention_cbam=attention_cbam, attention_gradcam=attention_gradcam, graph=graph)


def probabilities_text(probabilities: dict[str, float]) -> str:
    """'well 0.120, moderate 0.700, poor 0.180'."""
    return ", ".join(f"{name} {p:.3f}" for name, p in probabilities.items())
