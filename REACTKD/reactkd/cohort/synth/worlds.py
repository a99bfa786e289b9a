"""The worlds a synthetic cohort can be drawn from (`reactkd synth --world`).

- v1: the first cohort (white CT noise, unenhanced organ values, PET close to an oracle of the grade), kept
  byte for byte so that figures measured on it stay reproducible.
- v2: calibrated to the clinical literature (docs/synthetic-cohort.md, `clinical.py`): one portal-venous
  contrast phase, cirrhotic or steatotic parenchyma, per-tracer avidity by tumour size and grade, grade
  heterogeneity inside a nodule, and CT noise from the project's own full-dose acquisition.
- null: v2 in which PET carries no information about the grade beyond the recorded grade (tracer uptake is
  drawn from the recorded grade, not from the nodule's latent differentiation): the negative control of the
  distillation study.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactkd.errors import ConfigError


@dataclass(frozen=True)
class World:
    name: str
    version: int                    # the cohort version written to the manifest
    clinical: bool                  # v2 tissue values, contrast, parenchyma, avidity, grade foci
    physical_noise: bool            # CT noise of a full-dose acquisition by `reactkd.ldct` (else white noise)
    pet_from_recorded_grade: bool   # the null world


WORLDS: dict[str, World] = {
    "v1": World("v1", 1, clinical=False, physical_noise=False, pet_from_recorded_grade=False),
    "v2": World("v2", 2, clinical=True, physical_noise=True, pet_from_recorded_grade=False),
    "null": World("null", 2, clinical=True, physical_noise=True, pet_from_recorded_grade=True),
}
DEFAULT_WORLD = "v2"


def get_world(name: str | World) -> World:
    """The world called `name` (a `World` passes through); ConfigError for an unknown name."""
    if isinstance(name, World):
        return name
    if name not in WORLDS:
        raise ConfigError(f"unknown world {name!r} (use one of {', '.join(WORLDS)})")
    return WORLDS[name]
