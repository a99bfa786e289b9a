"""Checkpoints without pickle: tensors (model, optimizer state) in safetensors, everything else in JSON.

Both files are written atomically. The tensors file also carries the JSON in its own header and resuming
reads it from there, so a run killed between the two renames (new tensors, old JSON) still resumes from one
consistent checkpoint; state.json is the human-readable copy and the marker that a checkpoint exists.
Per-epoch random streams are derived from (seed, epoch), so no RNG state has to be saved for a resumed run
to repeat an uninterrupted one exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from reactkd.atomic import atomic_path, write_text_atomic
from reactkd.errors import ConfigError

STATE_FILE = "state.safetensors"
INFO_FILE = "state.json"
INFO_KEY = "reactkd_state"  # safetensors header entry holding the same JSON as state.json


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in info["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, info: dict) -> None:
    """Write the state after a finished epoch (info holds epoch, history, best metric ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, optim_info = _flatten_optimizer(optimizer)
    tensors.update(optim_tensors)
    payload = {**info, "optimizer": optim_info, "scheduler": scheduler.state_dict() if scheduler else None}
    text = json.dumps(payload, indent=1, default=float)
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={INFO_KEY: text})
    write_text_atomic(folder / INFO_FILE, text)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    run: dict | None = None) -> dict:
    """Restore model/optimizer/scheduler in place; return the info dict.

    ``run`` describes the run that resumes (stage, settings, cases); a checkpoint saved with another one is
    refused before anything is loaded, so a resumed run can only continue the run it left.
    """
    info_path = folder / INFO_FILE
    if not info_path.is_file() or not (folder / STATE_FILE).is_file():
        raise ConfigError(f"{folder}: no checkpoint to resume from")
    try:
        with safe_open(str(folder / STATE_FILE), framework="pt") as handle:
            embedded = (handle.metadata() or {}).get(INFO_KEY)
        info = json.loads(embedded if embedded is not None else info_path.read_text())
        tensors = load_file(str(folder / STATE_FILE))
    except (SafetensorError, OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{folder}: checkpoint is unreadable ({(str(exc).splitlines() or [type(exc).__name__])[0]}); "
                          "delete the folder or choose another --out") from None
    saved = info.get("run")
    if run is not None and saved is not None and saved != run:
        raise ConfigError(f"{folder}: the checkpoint belongs to another run (it differs in {', '.join(run_differences(saved, run))}); "
                          "resume with the settings it was started with, or choose another --out")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"]))
    if scheduler is not None and info.get("scheduler"):
        scheduler.load_state_dict(info["scheduler"])
    return info


def run_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two run descriptions (nested dicts compared per key)."""
    names = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += run_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key} ({a!r} then, {b!r} now)" if _short(a) and _short(b) else f"{prefix}{key}")
    return names


def _short(value) -> bool:
    return isinstance(value, (int, float, str, bool, type(None))) and len(repr(value)) <= 40


def has_checkpoint(folder: Path) -> bool:
    return (folder / INFO_FILE).is_file()
