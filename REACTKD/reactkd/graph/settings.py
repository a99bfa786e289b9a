"""The region graph's settings, one home: their defaults and bounds (``GraphSettings``).

The training config's ``graph:`` section, ``build_regions``' defaults, the cohort cache, inference
(``case_regions``) and a model package's metadata ``graph`` mapping all go through this class, so a setting
that a package could not load with is refused when the training config is loaded, not after training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from reactkd.errors import ConfigError

#: Inclusive bounds of each setting.
LIMITS: dict[str, tuple[float, float]] = {"max_tumours": (1, 64), "liver_parcels": (1, 64), "ring_mm": (0.0, 50.0)}
#: Settings that count nodes: whole numbers.
INTEGER_KEYS = ("max_tumours", "liver_parcels")
#: Further keys of a model package's metadata ``graph`` mapping: the region graph distillation settings the
#: package was trained with (the training config's loss keys), recorded there for provenance. They are loss
#: settings, not graph settings: ``from_metadata`` leaves them out.
RECORDED_LOSS_KEYS = ("gw_epsilon", "edge_weight")


def _problem(key: str, value) -> str | None:
    low, high = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high or (key in INTEGER_KEYS and not float(value).is_integer()):
        whole = ", a whole one" if key in INTEGER_KEYS else ""
        return f"graph.{key} must be a number in [{low:g}, {high:g}]{whole}, got {str(value)[:40]}"
    return None


@dataclass(frozen=True)
class GraphSettings:
    """How a label map becomes graph nodes: at most ``max_tumours`` tumour nodes (the largest components),
    ``liver_parcels`` liver parcels and peritumoral rings ``ring_mm`` wide. Validated on construction
    (ConfigError naming every bad value); whole-number floats are accepted for the counts.

    Example:
        >>> settings = GraphSettings(liver_parcels=6)
        >>> settings.to_dict()
        {'max_tumours': 8, 'liver_parcels': 6, 'ring_mm': 5.0}
        >>> GraphSettings.from_dict({"max_tumours": 4.0}).max_tumours
        4
        >>> GraphSettings(max_tumours=100)
        Traceback (most recent call last):
        ...
        reactkd.errors.ConfigError: invalid graph settings: graph.max_tumours must be a number in [1, 64], a whole one, got 100
    """

    max_tumours: int = 8
    liver_parcels: int = 8
    ring_mm: float = 5.0

    def __post_init__(self) -> None:
        problems = [p for p in (_problem(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)) if p]
        if problems:
            raise ConfigError("invalid graph settings: " + "; ".join(problems))
        for key in INTEGER_KEYS:
            object.__setattr__(self, key, int(getattr(self, key)))
        object.__setattr__(self, "ring_mm", float(self.ring_mm))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def problems(cls, data) -> list[str]:
        """What is wrong with a mapping of settings, one message per problem; [] when it would construct."""
        if not isinstance(data, Mapping) or set(map(str, data)) - set(cls.keys()):
            return [f"graph must be a mapping of {', '.join(cls.keys())}"]
        return [p for p in (_problem(key, value) for key, value in data.items()) if p]

    @classmethod
    def from_dict(cls, data: Mapping | None = None) -> GraphSettings:
        """Settings from a mapping (missing keys take their defaults); ConfigError for unknown keys or values."""
        problems = cls.problems({} if data is None else data)
        if problems:
            raise ConfigError("invalid graph settings: " + "; ".join(problems))
        return cls(**dict(data or {}))

    @classmethod
    def from_metadata(cls, graph: Mapping | None) -> GraphSettings:
        """The settings of a model package's metadata ``graph`` mapping (its recorded loss keys left out)."""
        if not isinstance(graph, Mapping):
            return cls.from_dict(graph)
        return cls.from_dict({k: v for k, v in graph.items() if k not in RECORDED_LOSS_KEYS})
