"""Build models by architecture name (used by model packages and configs)."""

from __future__ import annotations

import inspect
from typing import Any

from reactkd.errors import ConfigError
from reactkd.models.base import ReactKDModel
from reactkd.models.student import Student
from reactkd.models.teachers import DoseAwareTeacher, StructureFunctionTeacher

#: Far above any network here (the default SF teacher has ~30 M): refuses settings that would exhaust memory.
MAX_PARAMETERS = 500_000_000
MAX_SIZE_SETTING = 1024  # no width, depth or channel count of these networks comes near it


def _too_large(value) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return isinstance(value, str) and len(value) > 64
    if isinstance(value, (int, float)):
        return not -MAX_SIZE_SETTING <= value <= MAX_SIZE_SETTING or value != value  # NaN
    if isinstance(value, (list, tuple)):
        return len(value) > 16 or any(_too_large(item) for item in value)
    return True  # mappings or anything else: not a setting these networks take

ARCHITECTURES: dict[str, type[ReactKDModel]] = {
    "sf_teacher": StructureFunctionTeacher,
    "dose_teacher": DoseAwareTeacher,
    "student": Student,
}


def build_model(architecture: str, **kwargs: Any) -> ReactKDModel:
    """Instantiate ``ARCHITECTURES[architecture](**kwargs)``; ``model.config`` holds the full, JSON-ready
    kwargs (defaults included) that rebuild it. Raises ConfigError for an unknown name or keyword."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[architecture]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad settings for architecture {architecture!r}: {exc}") from None
    too_large = [f"{key}={value}" for key, value in kwargs.items() if _too_large(value)]
    if too_large:  # settings come from files: init_filters 100000 once asked for a terabyte
        raise ConfigError(f"bad settings for architecture {architecture!r}: {', '.join(too_large)} out of range "
                          f"(sizes up to {MAX_SIZE_SETTING}, lists up to 16 items)")
    try:
        import torch

        try:
            with torch.device("meta"):  # shapes only, no memory
                size = sum(p.numel() for p in cls(**kwargs).parameters())
        except (RuntimeError, NotImplementedError) as exc:
            if "meta" not in str(exc):
                raise
            size = 0  # a network that needs real values while it is built (the Swin teachers): bounds above only
        if size > MAX_PARAMETERS:
            raise ConfigError(f"bad settings for architecture {architecture!r}: {size:,} parameters is more than "
                              f"the {MAX_PARAMETERS:,} allowed")
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:
        raise ConfigError(f"bad settings for architecture {architecture!r}: {str(exc).splitlines()[0][:200]}") from None
