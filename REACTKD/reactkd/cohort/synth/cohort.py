"""Write a synthetic cohort to disk: one folder of NIfTI files per case and a manifest.csv."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.cohort.manifest import COLUMNS, write_manifest
from reactkd.cohort.synth.case import generate_case, stores_integer_hu
from reactkd.cohort.synth.grids import SIZES
from reactkd.cohort.synth.worlds import DEFAULT_WORLD, World, get_world
from reactkd.errors import ConfigError
from reactkd.images.writers import write_image

MAX_CASES = 100_000
#: Fraction of cases (from 4 cases up) belonging to patients scanned twice.
REPEAT_PATIENT_FRACTION = 0.1
#: Fractions of cases missing only FDG, only acetate, or both PET scans (CT only).
MISSING_FDG_ONLY, MISSING_ACT_ONLY, MISSING_BOTH = 0.08, 0.13, 0.02


@dataclass(frozen=True)
class PlannedCase:
    """One row of a cohort before its images exist."""

    case_id: str
    patient_id: str
    label: int
    seed: int
    patient_seed: int
    has_fdg: bool
    has_act: bool


def _derived_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint32)[0])


def _check(n_cases: int, size: str, seed: int) -> None:
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or not 1 <= n_cases <= MAX_CASES:
        raise ConfigError(f"number of cases must be an integer from 1 to {MAX_CASES}, got {n_cases!r}")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r} (use one of {', '.join(SIZES)})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def plan_cohort(n_cases: int, seed: int = 0) -> list[PlannedCase]:
    """Decide patients, labels, seeds and missing PET scans of a cohort (deterministic for `seed`).

    Case counts per grade differ by at most one; both scans of a patient share its label and anatomy.
    """
    _check(n_cases, "small", seed)
    rng = np.random.default_rng([seed, 0])
    repeats = max(1, round(REPEAT_PATIENT_FRACTION * n_cases)) if n_cases >= 4 else 0
    scans = [2] * repeats + [1] * (n_cases - 2 * repeats)
    # Greedy balancing: patients with two scans first, each to the grade with fewest cases (random ties).
    counts = np.zeros(3, int)
    labels = []
    for n_scans in scans:
        order = rng.permutation(3)
        grade = int(order[np.argmin(counts[order])])
        counts[grade] += n_scans
        labels.append(grade)
    patients = rng.permutation(len(scans))
    width = max(4, len(str(n_cases - 1)))
    rows: list[tuple[int, int, int]] = []  # (patient number, label, scan index)
    for number, patient in enumerate(patients):
        rows += [(number, labels[patient], scan) for scan in range(scans[patient])]
    missing = np.zeros((n_cases, 2), bool)  # columns: FDG, acetate
    if n_cases >= 4:
        n_fdg, n_act = max(1, round(MISSING_FDG_ONLY * n_cases)), max(1, round(MISSING_ACT_ONLY * n_cases))
        n_both = round(MISSING_BOTH * n_cases)
        chosen = rng.permutation(n_cases)
        missing[chosen[:n_fdg], 0] = True
        missing[chosen[n_fdg:n_fdg + n_act], 1] = True
        missing[chosen[n_fdg + n_act:n_fdg + n_act + n_both]] = True
    return [PlannedCase(case_id=f"case_{index:0{width}d}", patient_id=f"P{number:0{width}d}", label=label,
                        seed=_derived_seed(seed, 1, index), patient_seed=_derived_seed(seed, 2, number),
                        has_fdg=not missing[index, 0], has_act=not missing[index, 1])
            for index, (number, label, _) in enumerate(rows)]


#: Manifest columns of a synthetic cohort: the cohort columns, the world and its version number, and the
#: patient's latent differentiation (0-3), which only the generator knows (the oracle teacher reads it).
SYNTH_COLUMNS = (*COLUMNS, "world", "cohort_version", "differentiation")


def write_cohort(out_dir: str | os.PathLike, n_cases: int, size: str = "small", seed: int = 0,
                 progress: Callable[[int, int], None] | None = None, world: str | World = DEFAULT_WORLD) -> Path:
    """Generate `n_cases` cases of `world` into `out_dir` and return the path of `out_dir/manifest.csv`.

    Each case gets a folder `case_XXXX/` with ct.nii.gz (int16 HU; float32 for cohort v2's small size, whose
    noise is below what whole HU resolve), mask.nii.gz (uint8 0/1/2) and, unless
    absent for that case, pet_fdg.nii.gz and pet_act.nii.gz (float32 SUV); the manifest lists them relative to `out_dir` (an empty cell means
    the modality is absent). Every file is written atomically. An existing cohort in `out_dir` is
    overwritten: its manifest is removed first and rewritten last, so an interrupted run leaves no
    manifest; case folders that the new cohort does not use are left alone. `progress(done, total)` is
    called after each case. The manifest records the world and its version (columns `world`,
    `cohort_version`), which also key the cohort cache.
    """
    _check(n_cases, size, seed)
    world = get_world(world)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    manifest = out / "manifest.csv"
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        manifest.unlink()
    plan = plan_cohort(n_cases, seed)
    rows = []
    for done, planned in enumerate(plan, start=1):
        case = generate_case(planned.seed, planned.label, size, patient_seed=planned.patient_seed, world=world)
        folder = out / planned.case_id
        # Whole HU in [-1024, 3071]: int16 on disk is exact, as scanners store it, and compresses five times
        # faster than float32 (a full-size CT: ~4 s instead of ~20 s).
        ct = sitk.Cast(case.ct, sitk.sitkInt16) if stores_integer_hu(world, size) else case.ct
        images = {"ct": ct, "mask": case.mask,
                  "pet_fdg": case.pet_fdg if planned.has_fdg else None,
                  "pet_act": case.pet_act if planned.has_act else None}
        cells = {}
        for name, image in images.items():
            path = folder / f"{name}.nii.gz"
            if image is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a stale file from an earlier cohort must not look present
                cells[name] = ""
            else:
                write_image(image, path)
                cells[name] = path.relative_to(out).as_posix()
        rows.append({"case_id": planned.case_id, "patient_id": planned.patient_id, "label": str(planned.label), **cells,
                     "world": world.name, "cohort_version": str(world.version),
                     "differentiation": repr(float(case.differentiation))})
        if progress is not None:
            progress(done, n_cases)
    return write_manifest(manifest, rows, columns=SYNTH_COLUMNS)
