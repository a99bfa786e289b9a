"""Modality what-if: the same case graded on every input combination the model takes and the case has, in one
batched forward, so the reader sees whether PET changes the call (and which PET)."""

from __future__ import annotations

import numpy as np
import torch

from reactkd.vocabulary import MODALITIES, MODALITY_SUBSETS


def what_if_subsets(metadata: dict, available: np.ndarray) -> tuple[list[str], list[str], str | None]:
    """(subsets to grade, modalities the model reads that the case lacks, why there is no what-if or None).

    A subset is graded when the case has all its modalities and the model reads them; the structure-function
    teacher needs a PET in every one. A model that reads CT alone has nothing to ask."""
    reads = set(metadata["input_modalities"])
    missing = [name for name, flag in zip(MODALITIES, available) if name in reads and not flag]
    if reads == {"ct"}:
        return [], missing, "this model reads CT alone"
    needs_pet = metadata["architecture"] == "sf_teacher"
    subsets = [name for name, flags in MODALITY_SUBSETS.items()
               if all(available[i] and MODALITIES[i] in reads for i, flag in enumerate(flags) if flag)
               and not (needs_pet and not any(flags[1:]))]
    if len(subsets) < 2:
        return [], missing, "this case has only one input combination this model reads"
    return subsets, missing, None


@torch.no_grad()
def what_if_probabilities(model: torch.nn.Module, images: torch.Tensor, region_labels: torch.Tensor,
                          subsets: list[str], memory_format=torch.contiguous_format,
                          temperature: float = 1.0) -> np.ndarray:
    """(len(subsets), K) probabilities of one case (images (1, 3, D, H, W) with every available channel) on
    each subset: the absent channels zeroed and flagged, all subsets as one batch (logits / `temperature`)."""
    flags = torch.tensor([MODALITY_SUBSETS[name] for name in subsets], device=images.device)
    batch = (images * flags[:, :, None, None, None].to(images.dtype)).contiguous(memory_format=memory_format)
    logits = model(batch, flags, region_labels.expand(len(subsets), *region_labels.shape[1:])).logits
    return torch.softmax(logits.float() / temperature, dim=1).cpu().numpy()


def what_if_table(subsets: list[str], probs: np.ndarray, class_names: list[str], missing: list[str],
                  reason: str | None = None) -> dict:
    """The ``result.json`` block: one row per subset (grade and probabilities), the modalities the model reads
    that the case lacks, and whether any subset changes the grade; or why there is none (`reason`)."""
    if reason is not None:
        return {"unavailable": reason, "missing_modalities": missing}
    rows = [{"inputs": name, "grade": class_names[int(np.argmax(p))],
             "probabilities": {n: round(float(v), 6) for n, v in zip(class_names, p)}}
            for name, p in zip(subsets, probs)]
    return {"rows": rows, "missing_modalities": missing, "grade_changes": len({row["grade"] for row in rows}) > 1}
