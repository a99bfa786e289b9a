"""Frozen-teacher cache: each teacher's logits and region-node features, computed once per case.

The teachers are frozen and always see the un-dropped inputs, so their outputs are the same every epoch;
recomputing them made 84 % of a student step. The cache is one safetensors file (never a
pickle) beside the cohort cache, named by a key over the teacher packages' sha256, the cohort (manifest
content, preprocessing, graph settings) and this format's version, so any change builds a new file. Its
header carries the key and a sha256 of the tensors; a truncated, corrupted or foreign file is rebuilt,
with a message, never silently used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from reactkd.atomic import atomic_path
from reactkd.cohort.cache import CohortTensors
from reactkd.graph import node_features, soft_region_masks
from reactkd.models import graph_map

FORMAT_VERSION = "teacher-cache-v2"  # v2: node features from the map the training's rgd_map names
BATCH = 4


@dataclass
class TeacherTargets:
    """Per case: logits (N, T, classes), node features per teacher [(N, nodes, C_t)], usable (N, T) bool."""

    logits: torch.Tensor
    nodes: list[torch.Tensor]
    usable: torch.Tensor

    def to(self, device: torch.device) -> TeacherTargets:
        return TeacherTargets(self.logits.to(device), [n.to(device) for n in self.nodes], self.usable.to(device))

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"logits": self.logits, "usable": self.usable}
        named.update({f"nodes.{i}": n for i, n in enumerate(self.nodes)})
        return {k: v.detach().cpu().contiguous() for k, v in named.items()}


def cache_key(teacher_sha256: Sequence[str], cohort_key: str, rgd_map: str) -> str:
    text = json.dumps([FORMAT_VERSION, list(teacher_sha256), cohort_key, rgd_map])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _content_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def compute_teacher_targets(teachers: Sequence[torch.nn.Module], cohort: CohortTensors,
                            device: torch.device, *, rgd_map: str) -> TeacherTargets:
    """Run every teacher over the whole cohort (eval mode, un-dropped inputs) in batches; node features pool
    the map ``rgd_map`` names (``models.graph_map``; required: the student's nodes must pool the same kind of
    map, and a default would let the two differ silently)."""
    n_max = max(int(cohort.n_nodes.max()), 1)
    logits, nodes, usable = [], [[] for _ in teachers], []
    for start in range(0, len(cohort), BATCH):
        part = slice(start, start + BATCH)
        images, available = cohort.images[part].to(device), cohort.available[part].to(device)
        regions, node_index = cohort.region_labels[part].to(device), cohort.node_index[part].to(device)
        batch_logits, batch_usable = [], []
        for t, teacher in enumerate(teachers):
            out = teacher(images, available, regions)
            batch_logits.append(out.logits.float())
            feature_map = graph_map(out, rgd_map)
            masks = soft_region_masks(node_index, n_max, feature_map.shape[2:])
            nodes[t].append(node_features(feature_map.float(), masks).cpu())
            batch_usable.append(teacher.teacher_available(available))
        logits.append(torch.stack(batch_logits, dim=1).cpu())
        usable.append(torch.stack(batch_usable, dim=1).cpu())
    return TeacherTargets(torch.cat(logits), [torch.cat(n) for n in nodes], torch.cat(usable))


def load_or_build(cache_dir: Path, teachers: Sequence[torch.nn.Module], teacher_sha256: Sequence[str],
                  cohort: CohortTensors, device: torch.device,
                  notify: Callable[[str], None] = print, *, rgd_map: str) -> TeacherTargets:
    """The cached targets when the file is present and intact, else computed and written atomically."""
    key = cache_key(teacher_sha256, cohort.key, rgd_map)
    path = Path(cache_dir) / f"teachers-{key}.safetensors"
    if path.is_file():
        tensors, problem = _read_checked(path, key, len(cohort))
        if problem is None:
            return TeacherTargets(tensors["logits"], [tensors[f"nodes.{i}"] for i in range(len(teachers))],
                                  tensors["usable"])
        notify(f"teacher cache {path} is {problem}; rebuilding it")
    targets = compute_teacher_targets(teachers, cohort, device, rgd_map=rgd_map)
    tensors = targets.tensors()
    header = {"key": key, "sha256": _content_digest(tensors), "cases": str(len(cohort)),
              "teachers": json.dumps(list(teacher_sha256))}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return targets


def _read_checked(path: Path, key: str, n_cases: int) -> tuple[dict[str, torch.Tensor], str | None]:
    """The file's tensors (read once) and None when it is a complete cache for this key, else what is wrong."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        return {}, f"unreadable ({(str(exc).splitlines() or [type(exc).__name__])[0]})"
    if header.get("key") != key:
        return tensors, "for another teacher or cohort"
    if header.get("cases") != str(n_cases) or "logits" not in tensors or len(tensors["logits"]) != n_cases:
        return tensors, "incomplete"
    if header.get("sha256") != _content_digest(tensors):
        return tensors, "corrupted (checksum mismatch)"
    return tensors, None
