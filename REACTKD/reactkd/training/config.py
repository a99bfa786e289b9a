"""Training configuration: typed dataclasses loaded from YAML with safe_load; unknown keys are an error.

Configs that still give the region graph distillation settings ``gw_epsilon`` and ``edge_weight`` inside
``graph:`` (their former place) load as if they were given at the top level. The graph settings' bounds are
``reactkd.graph.GraphSettings``'; a config a model package could not be loaded with is refused here.

Example (every key optional; these are the defaults, a test checks that they are):

    name: null             # package name prefix: <name>-<stage> (default reactkd-<stage>)
    description: ""
    epochs: 30
    batch_size: 4
    learning_rate: 3.0e-4  # peak; linear warm-up then cosine decay, counted in optimiser steps
    teacher_learning_rate: null  # peak rate of the teacher stages (default: learning_rate)
    warmup_steps: 20
    weight_decay: 1.0e-4
    head: region           # region | global (the paper's global average pooling; for the ablation)
    balanced_batches: true # every batch draws the grades as evenly as the cohort allows
    inner_val_fraction: 0.2  # patient-grouped share of the training part that chooses the epoch
    # loss (reactkd.losses): total = (1 - alpha) * cls + alpha * kd + lambda_graph * rgd
    loss: focal            # classification loss: focal | ce
    focal_gamma: 2.0
    class_weights: null    # e.g. [1.0, 1.5, 1.0]
    alpha: 0.7             # weight of logit KD (student)
    lambda_graph: 1.0      # weight of region graph distillation (student)
    gw_epsilon: 0.05       # RGD: proximal step of the Gromov-Wasserstein solver
    edge_weight: 1.0       # RGD: weight of the edge term next to the GW term
    temperature: 2.0
    teacher_weights: [0.5, 0.5]   # structure-function, dose-aware ([1, 0]: SF alone, [0, 1]: dose alone)
    teacher_targets: cross_fitted # cross_fitted | in_sample | oracle (how the student's KD targets are made)
    cross_fit_folds: 3     # cross_fitted: K teachers per kind, each trained without one K-th of the fit cases
    rgd_map: stride4       # RGD graph nodes pool the teachers' and student's stride-4 maps (or: deepest)
    rgd_kind: gw           # gw (the paper's) | relational (distance-matrix MSE under the known correspondence)
    ct_only_share: 0.5     # at least this share of the student's training samples are CT alone
    modality_dropout: 0.3
    doses: [1.0, 0.5, 0.25, 0.1]  # dose teacher: dose fractions sampled per sample
    early_stopping: 0      # epochs without validation AUC gain before stopping (0 = off)
    seed: 0                # initialisation, batch order and (unless split_seed is given) the folds
    split_seed: null       # the patient-grouped folds, inner and cross-fitting splits (default: seed), so
                           # students of several seeds can share teachers trained on the same split
    amp: true              # bf16 autocast on CUDA (ignored on CPU)
    preprocessing:         # stored in every package (reactkd.preprocessing.PreprocessConfig)
      grid: [64, 128, 128]
      margin_mm: 10.0
      ct_window: [-160.0, 240.0]
      pet_percentiles: [1.0, 99.0]
      pet_scale: percentile   # percentile | liver (PET over the liver's median uptake)
      pet_liver_ratio_max: 6.0
      zscore: false
      min_liver_island_fraction: 0.05
    graph: {max_tumours: 8, liver_parcels: 8, ring_mm: 5.0}  # reactkd.graph.GraphSettings (bounds there)
    student: {init_filters: 16, blocks_down: [1, 2, 2, 2]}  # any Student argument (reactkd.models.student)
    teacher: {feature_size: 48}  # any Swin teacher argument (reactkd.models.teachers)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reactkd.errors import ConfigError, ReactKDError
from reactkd.graph.settings import RECORDED_LOSS_KEYS, GraphSettings
from reactkd.losses import CLASSIFICATION_LOSSES, RGD_KINDS, RGD_LIMITS, rgd_problems
from reactkd.models.base import GRAPH_MAPS
from reactkd.preprocessing import PreprocessConfig
from reactkd.vocabulary import HEADS, TEACHER_DOSE, TEACHER_SF


@dataclass
class TrainConfig:
    name: str | None = None  # model package name prefix: <name>-<stage> (default reactkd-<stage>)
    description: str = ""
    epochs: int = 30
    batch_size: int = 4
    learning_rate: float = 3e-4
    teacher_learning_rate: float | None = None
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    head: str = "region"
    balanced_batches: bool = True
    inner_val_fraction: float = 0.2
    loss: str = "focal"
    focal_gamma: float = 2.0
    class_weights: list[float] | None = None
    alpha: float = 0.7
    lambda_graph: float = 1.0
    gw_epsilon: float = 0.05
    edge_weight: float = 1.0
    temperature: float = 2.0
    teacher_weights: list[float] = field(default_factory=lambda: [0.5, 0.5])
    teacher_targets: str = "cross_fitted"
    cross_fit_folds: int = 3
    rgd_map: str = "stride4"
    rgd_kind: str = "gw"
    ct_only_share: float = 0.5
    modality_dropout: float = 0.3
    doses: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.1])
    early_stopping: int = 0
    seed: int = 0
    split_seed: int | None = None
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    preprocessing: dict = field(default_factory=dict)
    graph: GraphSettings = field(default_factory=GraphSettings)
    student: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)

    @property
    def folds_seed(self) -> int:
        """The seed of the folds, the inner split and the cross-fitting parts."""
        return self.seed if self.split_seed is None else self.split_seed

    def stage_learning_rate(self, stage: str) -> float:
        """Peak learning rate of a stage: the Swin teachers tolerate (and need) a higher one than the student."""
        if stage in (TEACHER_SF, TEACHER_DOSE) and self.teacher_learning_rate is not None:
            return self.teacher_learning_rate
        return self.learning_rate

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term of the student (``reactkd.losses.total_loss`` sums them in this order);
        the teachers' loss is the classification term alone."""
        return {"cls": 1.0 - self.alpha, "kd": self.alpha, "rgd": self.lambda_graph}

    def package_graph(self) -> dict:
        """A model package's metadata ``graph`` mapping: the graph settings and, recorded beside them, the
        region graph distillation settings of the training (``RECORDED_LOSS_KEYS``)."""
        return {**self.graph.to_dict(), **{key: getattr(self, key) for key in RECORDED_LOSS_KEYS}}

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocessing)

    def validate(self) -> None:
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be >= 1")
        if self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        if self.head not in HEADS:
            problems.append(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if not 0.05 <= self.inner_val_fraction <= 0.5:
            problems.append("inner_val_fraction must lie in [0.05, 0.5]")
        if self.loss not in CLASSIFICATION_LOSSES:
            problems.append(f"loss must be 'focal' or 'ce', got {self.loss!r}")
        if not 0 <= self.alpha <= 1:
            problems.append("alpha must lie in [0, 1]")
        for key in ("learning_rate", "temperature", "weight_decay", "focal_gamma", "alpha", "lambda_graph",
                    "modality_dropout", "inner_val_fraction"):
            if not math.isfinite(getattr(self, key)):
                problems.append(f"{key} must be a finite number")
        problems += rgd_problems({key: getattr(self, key) for key in RGD_LIMITS})
        if not 0 < self.temperature <= 100 or not 0 < self.learning_rate <= 1:
            problems.append("temperature must lie in (0, 100] and learning_rate in (0, 1]")
        if self.teacher_learning_rate is not None and not 0 < self.teacher_learning_rate <= 1:
            problems.append("teacher_learning_rate must lie in (0, 1]")
        if not 0 <= self.weight_decay <= 1 or not 0 <= self.focal_gamma <= 10 or not 0 <= self.lambda_graph <= 100:
            problems.append("weight_decay must lie in [0, 1], focal_gamma in [0, 10], lambda_graph in [0, 100]")
        if self.epochs > 10_000 or self.batch_size > 4096 or self.warmup_steps > 1_000_000:
            problems.append("epochs (<= 10000), batch_size (<= 4096) or warmup_steps (<= 1e6) out of range")
        if not 0 <= self.modality_dropout < 1:
            problems.append("modality_dropout must lie in [0, 1)")
        if not self.doses or any(not MIN_DOSE <= d <= 1 for d in self.doses):
            problems.append(f"doses must be fractions of the full dose in [{MIN_DOSE:g}, 1], got "
                            f"{[float(d) for d in self.doses][:8]}")
        if len(self.teacher_weights) != 2 or min(self.teacher_weights) < 0 or sum(self.teacher_weights) <= 0:
            problems.append("teacher_weights must be two non-negative numbers, not both 0")
        if self.teacher_targets not in TEACHER_TARGETS:
            problems.append(f"teacher_targets must be one of {', '.join(TEACHER_TARGETS)}, got {_short(self.teacher_targets)}")
        if not 2 <= self.cross_fit_folds <= MAX_CROSS_FIT_FOLDS:
            problems.append(f"cross_fit_folds must lie in [2, {MAX_CROSS_FIT_FOLDS}]")
        if self.teacher_targets == "oracle" and self.lambda_graph > 0:
            problems.append("teacher_targets oracle gives class probabilities, no region graphs: set lambda_graph 0")
        if self.rgd_map not in GRAPH_MAPS or self.rgd_kind not in RGD_KINDS:
            problems.append(f"rgd_map must be one of {', '.join(GRAPH_MAPS)} and rgd_kind one of {', '.join(RGD_KINDS)}")
        if not math.isfinite(self.ct_only_share) or not 0 <= self.ct_only_share <= 1:
            problems.append("ct_only_share must lie in [0, 1]")
        if self.class_weights is not None and (len(self.class_weights) != 3 or not all(
                math.isfinite(w) and w >= 0 for w in self.class_weights) or sum(self.class_weights) <= 0):
            problems.append("class_weights must list 3 finite, non-negative weights, not all 0")
        if any(not math.isfinite(d) for d in self.doses) or any(not math.isfinite(w) for w in self.teacher_weights):
            problems.append("doses and teacher_weights must be finite numbers")
        try:
            self.preprocess_config()
        except (TypeError, ValueError, ReactKDError) as exc:
            problems.append(f"preprocessing: {exc}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))


def _coerce(name: str, expected, value):
    """Check a YAML value against a dataclass field type (int/float/bool/str/list/dict/nested dataclass)."""
    origin = typing.get_origin(expected)
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name!r} must be a mapping")
        return _from_mapping(expected, value, prefix=f"{name}.")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        expected = next(t for t in options if t is not type(None))
        origin = typing.get_origin(expected)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    check = origin or expected
    if check is float and isinstance(value, float) or check is not float and isinstance(value, check) \
            and not (check is int and isinstance(value, bool)):
        if origin is list:
            (item,) = typing.get_args(expected)
            return [_coerce(f"{name}[]", item, v) for v in value]
        return value
    raise ConfigError(f"config key {name!r} must be of type {getattr(check, '__name__', check)}, got {_short(value)}")


def _from_mapping(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    return cls(**{k: _coerce(prefix + k, hints[k], v) for k, v in data.items()})


MAX_CONFIG_BYTES = 256 * 1024
#: How the student's KD targets are made: teachers that never trained on the case (K-fold inside the fit
#: part), the teachers trained on every fit case, or the generator's P(recorded grade | latent).
TEACHER_TARGETS = ("cross_fitted", "in_sample", "oracle")
MAX_CROSS_FIT_FOLDS = 10
MIN_DOSE = 1e-3  # 0.1 % of the full dose: far below any clinical protocol; smaller values underflow in float32


MAX_EXPANDED_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """safe_load that refuses a document whose aliases would expand it beyond `MAX_EXPANDED_NODES` values
    ("billion laughs": 9 nested aliases of 9 turn 600 bytes into 10^9 strings). PyYAML shares aliased objects,
    but anything that walks or prints the value (type checks, messages) would expand it."""

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def expanded(item) -> int:  # values the document holds with every alias written out (memoised)
            key = id(item)
            if key not in sizes:
                sizes[key] = 1  # a cycle counts once
                children = item.value if isinstance(item, yaml.SequenceNode) else [
                    part for pair in item.value for part in pair] if isinstance(item, yaml.MappingNode) else []
                sizes[key] = 1 + sum(expanded(child) for child in children)
                if sizes[key] > MAX_EXPANDED_NODES:
                    raise ConfigError(f"the config expands (through YAML aliases) into more than "
                                      f"{MAX_EXPANDED_NODES} values; refusing it")
            return sizes[key]

        expanded(node)
        return super().construct_document(node)


def _short(value, limit: int = 60) -> str:
    """A value for an error message, cut to `limit` characters (never the whole of a huge value)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _moved_loss_keys(data: dict) -> dict:
    """The config with the RGD loss keys a ``graph:`` section still carries (their former place) moved to the
    top level; ConfigError when both places give one of them."""
    graph = data.get("graph")
    if not isinstance(graph, dict) or not set(graph) & set(RECORDED_LOSS_KEYS):
        return data
    moved = {key: graph[key] for key in RECORDED_LOSS_KEYS if key in graph}
    twice = sorted(set(moved) & set(data))
    if twice:
        raise ConfigError(f"config key(s) {', '.join(twice)} given both at the top level and in graph "
                          "(their former place): give them at the top level only")
    return {**data, **moved, "graph": {k: v for k, v in graph.items() if k not in RECORDED_LOSS_KEYS}}


def load_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """Load a YAML config (safe_load), apply keyword overrides that are not None, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: a config of {path.stat().st_size} bytes is implausibly large")
        try:
            loader = _BoundedLoader(path.read_text(encoding="utf-8"))  # a SafeLoader: no Python objects
            try:
                data = loader.get_single_data() or {}
            finally:
                loader.dispose()
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: invalid YAML ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a YAML mapping")
        bad_keys = [key for key in data if not isinstance(key, str)]
        if bad_keys:
            raise ConfigError(f"{path}: config keys must be names, got {_short(bad_keys[0])}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    data = _moved_loss_keys(data)
    config = _from_mapping(TrainConfig, data)
    config.validate()
    return config


def config_to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)
