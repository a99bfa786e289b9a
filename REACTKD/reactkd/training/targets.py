"""The student's distillation targets: which teacher answers for which fit case, and the record of it.

- cross_fitted (default): K teachers of each kind, teacher k trained on the fit cases outside part k
  (``cohort.folds.cross_fit_parts``); a fit case's targets come from the teacher of its own part, which never
  saw it. In-sample targets from a teacher that memorised the case are near one-hot and carry little beyond
  the label.
- in_sample: one teacher of each kind, trained on every fit case (the paper's set-up; a study arm).
- oracle: no network; the generator's P(recorded grade | latent differentiation) (synthetic cohorts only): the
  most a teacher could pass on, the headroom of logit distillation.

Only the kinds with a positive ``teacher_weights`` entry are used, and exactly those must be given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reactkd.cohort.folds import cross_fit_parts
from reactkd.cohort.manifest import CaseRecord
from reactkd.errors import ConfigError, ModelPackageError
from reactkd.training.config import TrainConfig
from reactkd.training.teacher_cache import TeacherTargets
from reactkd.vocabulary import TEACHER_DOSE, TEACHER_SF

TEACHER_KINDS = (TEACHER_SF, TEACHER_DOSE)  # the order of ``teacher_weights``
#: Floor of the oracle's probabilities before the log: a finite logit for a grade the latent all but rules out.
ORACLE_MIN_PROBABILITY = 1e-6


@dataclass
class TeacherPlan:
    """The teachers the student distils from, checked before any case is read."""

    mode: str
    kinds: list[str] = field(default_factory=list)        # teacher kinds used, in TEACHER_KINDS order
    weights: list[float] = field(default_factory=list)    # their teacher_weights entries
    packages: list[list] = field(default_factory=list)    # per kind: its package(s), by part for cross_fitted
    parts: list[list[int]] = field(default_factory=list)  # cross_fitted: the fit cases of each part

    def record(self) -> dict:
        """What a student package records about its targets (``training.teacher_targets``)."""
        teachers = [{"stage": kind, "part": part if self.mode == "cross_fitted" else None,
                     "sha256": package.metadata["sha256"],
                     "train_seconds": package.metadata.get("training", {}).get("train_seconds")}
                    for kind, packages in zip(self.kinds, self.packages) for part, package in enumerate(packages)]
        record = {"mode": self.mode, "kinds": self.kinds, "weights": self.weights, "teachers": teachers}
        if self.mode == "cross_fitted":
            seconds = [t["train_seconds"] for t in teachers]
            record.update(folds=len(self.parts), part_sizes=[len(p) for p in self.parts], extra_cost={
                "teacher_trainings": len(teachers),
                "teacher_seconds": round(sum(seconds), 1) if all(s is not None for s in seconds) else None,
                "what": f"{len(self.parts)} trainings per teacher kind, each on {len(self.parts) - 1}/"
                        f"{len(self.parts)} of the fit cases, instead of one on all of them"})
        if self.mode == "oracle":
            record["source"] = ("P(recorded grade | latent differentiation) of the synthetic generator "
                                "(reactkd.cohort.synth.anatomy.recorded_grade_posterior)")
        return record


def used_kinds(config: TrainConfig, given: dict[str, list]) -> list[str]:
    """The teacher kinds with a positive weight; ConfigError when they are not exactly the kinds given."""
    kinds = [kind for kind, weight in zip(TEACHER_KINDS, config.teacher_weights) if weight > 0]
    missing = [kind for kind in kinds if not given.get(kind)]
    unused = [kind for kind in TEACHER_KINDS if given.get(kind) and kind not in kinds]
    if missing or unused:
        problem = (f"no --{missing[0]} was given" if missing else f"--{unused[0]} was given but its weight is 0")
        raise ConfigError(f"teacher_weights {list(config.teacher_weights)} (structure-function, dose) do not match "
                          f"the teachers given: {problem}")
    return kinds


def plan_teachers(config: TrainConfig, given: dict[str, list], records: list[CaseRecord], fit_idx: list[int],
                  load) -> TeacherPlan:
    """Check the teachers against the config and the fit cases; ``load(path, kind)`` returns a verified package.
    Every problem is a ConfigError or ModelPackageError raised before any case is read."""
    if config.teacher_targets == "oracle":
        if any(given.values()):
            raise ConfigError("teacher_targets oracle reads the cohort's latent grades; give no teacher packages")
        missing = [records[i].case_id for i in fit_idx if records[i].differentiation is None]
        if missing:
            raise ConfigError(f"teacher_targets oracle needs the latent differentiation of every fit case (the "
                              f"manifest's differentiation column, written by reactkd synth); {len(missing)} case(s) "
                              f"lack it, e.g. {missing[0]}")
        return TeacherPlan("oracle")
    kinds = used_kinds(config, given)
    weights = [config.teacher_weights[TEACHER_KINDS.index(kind)] for kind in kinds]
    if config.teacher_targets == "in_sample":
        for kind in kinds:
            if len(given[kind]) != 1:
                raise ConfigError(f"teacher_targets in_sample takes one --{kind} package, got {len(given[kind])} "
                                  "(cross-fitted teachers? set teacher_targets: cross_fitted)")
        packages = [[load(given[kind][0], kind)] for kind in kinds]
        for kind, (package,) in zip(kinds, packages):
            if "cross_fit" in package.metadata.get("training", {}):
                raise ConfigError(f"{given[kind][0]}: a cross-fitted teacher (trained without part of the fit cases) "
                                  "cannot give in-sample targets; set teacher_targets: cross_fitted")
        return TeacherPlan("in_sample", kinds, weights, packages)
    folds = config.cross_fit_folds
    parts = cross_fit_parts(records, fit_idx, folds, seed=config.folds_seed)
    packages = []
    for kind in kinds:
        if len(given[kind]) != folds:
            raise ConfigError(f"teacher_targets cross_fitted with cross_fit_folds {folds} takes {folds} --{kind} "
                              f"packages (reactkd train --stage {kind} --cross-fit-part k, k = 0..{folds - 1}), got "
                              f"{len(given[kind])}; for one teacher trained on every fit case set "
                              "teacher_targets: in_sample")
        by_part: dict[int, object] = {}
        for path in given[kind]:
            package = load(path, kind)
            record = package.metadata.get("training", {}).get("cross_fit")
            if not isinstance(record, dict) or record.get("folds") != folds:
                raise ModelPackageError(f"{path}: not a cross-fitted teacher of {folds} folds (train it with "
                                        "--cross-fit-part)")
            part = record.get("part")
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < folds:
                raise ModelPackageError(f"{path}: its cross-fitting record names part {part!r}, not one of 0 to "
                                        f"{folds - 1}")
            if part in by_part:
                raise ConfigError(f"{path}: a second --{kind} package for cross-fitting part {part}")
            if set(record.get("held_out_cases", [])) != {records[i].case_id for i in parts[part]}:
                raise ModelPackageError(f"{path}: held out other cases than this student's part {part} (another "
                                        "manifest, seed or inner split?)")
            by_part[part] = package
        packages.append([by_part[k] for k in range(folds)])
    return TeacherPlan("cross_fitted", kinds, weights, packages, parts)


def select_cross_fitted(stacked: TeacherTargets, n_kinds: int, parts: list[list[int]], n_cases: int) -> TeacherTargets:
    """From the outputs of all n_kinds * K teachers (kind after kind, part after part) keep, for every case,
    those of the teacher of its own part; a case in no part (inner validation, test) is marked not usable."""
    folds = len(parts)
    part_of = torch.full((n_cases,), -1, dtype=torch.long)
    for k, part in enumerate(parts):
        part_of[torch.tensor(part, dtype=torch.long)] = k
    in_part = part_of >= 0
    source = part_of.clamp_min(0)
    cases = torch.arange(n_cases)
    index = torch.arange(n_kinds)[None, :] * folds + source[:, None]                 # (N, kinds)
    logits = stacked.logits[cases[:, None], index]                                    # (N, kinds, classes)
    usable = stacked.usable[cases[:, None], index] & in_part[:, None]
    nodes = [torch.stack(stacked.nodes[kind * folds:(kind + 1) * folds])[source, cases] for kind in range(n_kinds)]
    return TeacherTargets(logits, nodes, usable)


def oracle_targets(records: list[CaseRecord], fit_idx: list[int]) -> TeacherTargets:
    """The generator's posterior of the recorded grade given each case's latent differentiation, as logits of one
    'teacher', with the fit cases' grade shares as the prior; cases without a latent value are not usable."""
    from reactkd.cohort.synth.anatomy import recorded_grade_posterior

    prior = np.bincount([records[i].label for i in fit_idx], minlength=3) / len(fit_idx)
    latent = np.array([r.differentiation if r.differentiation is not None else np.nan for r in records])
    known = ~np.isnan(latent)
    probabilities = np.full((len(records), 3), 1 / 3)
    probabilities[known] = recorded_grade_posterior(latent[known], prior)
    logits = torch.from_numpy(np.log(np.clip(probabilities, ORACLE_MIN_PROBABILITY, None))).float()
    return TeacherTargets(logits[:, None], [], torch.from_numpy(known)[:, None])
