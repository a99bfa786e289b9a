"""Patient-grouped, grade-stratified K-fold splits (several scans of one patient never straddle folds), and the
inner split of a fold's training part that chooses the epoch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from reactkd.cohort.manifest import CaseRecord
from reactkd.errors import ConfigError


def split_fold(records: list[CaseRecord], fold: int, folds: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, validation) of fold `fold` of `folds`; deterministic for a seed."""
    if folds < 2:
        raise ConfigError("--folds must be at least 2")
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold must lie in [0, {folds - 1}], got {fold}")
    labels = np.array([r.label for r in records])
    groups = np.array([r.patient_id for r in records])
    n_patients = len(set(groups.tolist()))
    if n_patients < folds:
        raise ConfigError(f"{n_patients} patient(s) cannot be split into {folds} folds")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():  # "least populated class has only 1 member": reported below if it matters
            warnings.simplefilter("ignore", UserWarning)
            train, val = list(splitter.split(np.zeros(len(records)), labels, groups))[fold]
    except ValueError:  # scikit-learn: more folds than cases of some grade
        raise ConfigError(f"the cohort is too small for {folds} folds: {_grade_counts(labels)}; use fewer "
                          "--folds or more cases") from None
    if len(set(labels[train].tolist())) < 2:
        raise ConfigError(f"fold {fold} of {folds} leaves fewer than 2 grades to train on "
                          f"({_grade_counts(labels)}); use fewer --folds or more cases")
    return sorted(train.tolist()), sorted(val.tolist())


@dataclass(frozen=True)
class PackageSplit:
    """The cross-validation split a model package was trained on, from its metadata's training record."""

    fold: int
    folds: int
    seed: int
    test_cases: frozenset[str] | None  # held-out case ids (packages trained before splits were recorded lack them)

    @classmethod
    def of(cls, metadata: dict) -> PackageSplit | None:
        """None for a package without a training record (sealed by hand, trained elsewhere)."""
        training = metadata.get("training")
        if not isinstance(training, dict):
            return None
        config = training.get("config")
        seed = None
        if isinstance(config, dict):  # the folds' seed: split_seed when the training gave one
            seed = config.get("seed") if config.get("split_seed") is None else config.get("split_seed")
        values = (training.get("fold"), training.get("folds"), seed)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        ids = training.get("test_cases")
        return cls(*values, frozenset(ids) if isinstance(ids, list) else None)

    def describe(self) -> str:
        return f"fold {self.fold} of {self.folds} held out, seed {self.seed}"

    def held_out(self, records: list[CaseRecord], manifest: str) -> list[int]:
        """Indices of the held-out test cases in ``records``; ConfigError when this manifest no longer gives the
        cases the model was trained without (an edited, reordered or other cohort)."""
        _, test = split_fold(records, self.fold, self.folds, seed=self.seed)
        if self.test_cases is not None and {records[i].case_id for i in test} != self.test_cases:
            raise ConfigError(f"{manifest}: its {self.describe()} is not the set of cases the model was trained "
                              "without (another or an edited manifest?), so some test cases may be training cases")
        return test

    def same_cases_as(self, other: PackageSplit) -> bool:
        """True unless both record their held-out cases and the sets differ."""
        return self.test_cases is None or other.test_cases is None or self.test_cases == other.test_cases


def _grade_counts(labels: np.ndarray) -> str:
    counts = np.bincount(labels, minlength=3)
    return ", ".join(f"{int(n)} case(s) of grade {grade}" for grade, n in enumerate(counts))


def inner_split(records: list[CaseRecord], train_idx: list[int], fraction: float = 0.2,
                seed: int = 0) -> tuple[list[int], list[int]]:
    """Split a fold's training part into (fit, inner validation), patient-grouped and grade-stratified.

    The inner validation part chooses the epoch (and any calibration); the fold's held-out test part is
    never looked at during training, so what ``evaluate --fold`` reports is an honest estimate.
    """
    subset = [records[i] for i in train_idx]
    labels = np.array([r.label for r in subset])
    groups = np.array([r.patient_id for r in subset])
    n_patients = len(set(groups.tolist()))
    # As many splits as 1 / fraction asks, but no more than the rarest grade allows (tiny cohorts get a
    # coarser, still patient-grouped and stratified split: 2 splits = half the training part).
    if n_patients < 2:
        raise ConfigError(f"{n_patients} training patient(s) are too few for an inner validation split")
    counts = np.bincount(labels)
    smallest_grade = int(counts[counts > 0].min())
    n_splits = min(max(2, round(1 / fraction)), max(2, smallest_grade), n_patients)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + 1)
    with warnings.catch_warnings():  # "least populated class has only 1 member": expected on tiny cohorts
        warnings.simplefilter("ignore", UserWarning)
        fit, val = next(splitter.split(np.zeros(len(subset)), labels, groups))
    return sorted(train_idx[i] for i in fit), sorted(train_idx[i] for i in val)


#: Cases of every grade each cross-fitting part must hold, so that every teacher still trains on every grade
#: and every part's targets come from a teacher that saw the grade.
MIN_PER_GRADE_PER_PART = 2


def cross_fit_parts(records: list[CaseRecord], fit_idx: list[int], folds: int, seed: int = 0) -> list[list[int]]:
    """Split the fit cases into ``folds`` patient-grouped, grade-stratified parts for cross-fitted teacher
    targets: teacher k trains on every part but k, and its outputs are the targets of part k's cases.
    ConfigError when a grade has too few fit cases for every part to hold MIN_PER_GRADE_PER_PART of it."""
    subset = [records[i] for i in fit_idx]
    labels = np.array([r.label for r in subset])
    groups = np.array([r.patient_id for r in subset])
    counts = np.bincount(labels, minlength=3)
    need = folds * MIN_PER_GRADE_PER_PART
    short = [(grade, int(n)) for grade, n in enumerate(counts) if n < need]
    if short or len(set(groups.tolist())) < folds:
        grade, n = short[0] if short else (int(np.argmin(counts)), int(counts.min()))
        raise ConfigError(f"cross-fitting with {folds} folds needs at least {need} fit cases of every grade "
                          f"({MIN_PER_GRADE_PER_PART} per part); the fit part has {n} of grade {grade}: use fewer "
                          "cross_fit_folds, more cases, or teacher_targets: in_sample")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = [sorted(fit_idx[i] for i in held) for _, held in splitter.split(np.zeros(len(subset)), labels, groups)]
    for k, part in enumerate(parts):
        part_counts = np.bincount([records[i].label for i in part], minlength=3)
        if part_counts.min() < MIN_PER_GRADE_PER_PART:  # patient groups can unbalance a part
            raise ConfigError(f"cross-fitting part {k} of {folds} holds {_grade_counts(np.array([records[i].label for i in part]))}; "
                              "use fewer cross_fit_folds or more cases")
    return parts
