"""Build models by architecture name (used by model packages and configs)."""

from __future__ import annotations

import inspect
from typing import Any

from reactkd.errors import ConfigError
from reactkd.models.base import ReactKDModel
from reactkd.models.student import Student
from reactkd.models.teachers import DoseAwareTeacher, StructureFunctionTeacher

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
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"bad settings for architecture {architecture!r}: {exc}") from None
