"""Patient-grouped, grade-stratified K-fold splits (several scans of one patient never straddle folds), and the
inner split of a fold's training part that chooses the epoch."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..errors import ConfigError
from ..manifest import CaseRecord


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
