"""Patient-grouped, grade-stratified K-fold splits (several scans of one patient never straddle folds)."""

from __future__ import annotations

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
    train, val = list(splitter.split(np.zeros(len(records)), labels, groups))[fold]
    return sorted(train.tolist()), sorted(val.tolist())
