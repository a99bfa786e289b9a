"""Prediction sets with a coverage guarantee: class-conditional (Mondrian) split-conformal sets over the grades.

Score (LAC): s(x, k) = 1 - p_k(x). The calibration cases of grade k give n_k scores; grade k enters a case's
set when its p-value, (#{calibration scores of grade k >= s(x, k)} + 1) / (n_k + 1), is at least 1 - level. Then,
for every grade k, P(true grade in the set | grade k) >= level on exchangeable cases (Vovk et al. 2005,
"Mondrian" conformal prediction). The grades are ordinal, so a set is closed into a contiguous run (the
grades between its lowest and highest member are added), and an empty set gets the most probable grade:
both only add grades, so the guarantee holds. With n_k <= level / (1 - level) calibration cases of a grade, that
grade enters every set (its p-value can never fall below 1 - level): ``ConformalCalibration.notes`` says so.

Numbers only (NumPy): the package stores a calibration, inference applies it, evaluation measures coverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reactkd.errors import ConfigError

DEFAULT_LEVEL = 0.9
METHOD = "mondrian split-conformal, LAC score (1 - p), contiguous sets"


def check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < float(level) < 1:
        raise ConfigError(f"the prediction-set level must lie strictly between 0 and 1 (e.g. 0.9), got {level!r}")
    return float(level)


@dataclass(frozen=True)
class ConformalCalibration:
    """The sorted calibration scores of each grade and the nominal level."""

    level: float
    scores: tuple[tuple[float, ...], ...]

    @property
    def n_per_class(self) -> list[int]:
        return [len(s) for s in self.scores]

    @property
    def notes(self) -> list[str]:
        need = math.floor(self.level / (1 - self.level) + 1e-9) + 1
        return [f"grade {k}: {n} calibration case(s), fewer than the {need} a {self.level:.0%} set needs to ever "
                "leave this grade out" for k, n in enumerate(self.n_per_class) if n < need]

    def at_level(self, level: float) -> ConformalCalibration:
        """The same calibration at another nominal level (the scores do not depend on it)."""
        return ConformalCalibration(check_level(level), self.scores)

    def to_dict(self) -> dict:
        return {"method": METHOD, "level": self.level, "n_calibration": self.n_per_class,
                "scores": [list(s) for s in self.scores]}

    @classmethod
    def from_dict(cls, data: dict, n_classes: int = 3) -> ConformalCalibration:
        """Rebuild a stored calibration; ValueError when it is not one (wrong shape, values outside [0, 1])."""
        if not isinstance(data, dict) or data.get("method") != METHOD:
            raise ValueError("not a conformal calibration of this kind")
        level = check_level(data.get("level"))
        scores = data.get("scores")
        if not isinstance(scores, list) or len(scores) != n_classes:
            raise ValueError(f"a conformal calibration needs scores for {n_classes} grades")
        cleaned = []
        for values in scores:
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 1 or len(array) == 0 or not np.all(np.isfinite(array)) or array.min() < 0 or \
                    array.max() > 1:
                raise ValueError("conformal calibration scores must be non-empty lists of numbers in [0, 1]")
            cleaned.append(tuple(np.sort(array).tolist()))
        return cls(level, tuple(cleaned))


def calibrate(labels: Sequence[int], probs: np.ndarray, level: float = DEFAULT_LEVEL) -> ConformalCalibration:
    """Calibrate on held-out cases (labels (N,), probabilities (N, K)); every grade needs at least one case."""
    level = check_level(level)
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(labels) != len(probs):
        raise ConfigError("calibration needs one probability row per labelled case")
    scores = 1.0 - probs[np.arange(len(labels)), labels]
    per_class = []
    for k in range(probs.shape[1]):
        mine = np.sort(scores[labels == k])
        if len(mine) == 0:
            raise ConfigError(f"no calibration case of grade {k}: a class-conditional set cannot be calibrated")
        per_class.append(tuple(mine.tolist()))
    return ConformalCalibration(level, tuple(per_class))


def p_values(calibration: ConformalCalibration, probs: np.ndarray) -> np.ndarray:
    """(N, K) conformal p-value of every grade for every case (no smoothing)."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.empty_like(probs)
    for k, scores in enumerate(calibration.scores):
        ordered = np.asarray(scores)
        at_least = len(ordered) - np.searchsorted(ordered, 1.0 - probs[:, k], side="left")
        out[:, k] = (at_least + 1) / (len(ordered) + 1)
    return out


def prediction_sets(calibration: ConformalCalibration, probs: np.ndarray) -> np.ndarray:
    """(N, K) bool: each case's set, contiguous and never empty."""
    probs = np.asarray(probs, dtype=np.float64)
    raw = p_values(calibration, probs) >= 1.0 - calibration.level
    raw[np.arange(len(probs)), probs.argmax(axis=1)] |= ~raw.any(axis=1)
    grades = np.arange(probs.shape[1])
    low = np.where(raw, grades, probs.shape[1]).min(axis=1)
    high = np.where(raw, grades, -1).max(axis=1)
    return (grades[None, :] >= low[:, None]) & (grades[None, :] <= high[:, None])


def describe(members: Sequence[str], level: float) -> str:
    """The set in plain words, e.g. 'moderate or poor, 90 % set'."""
    words = members[0] if len(members) == 1 else ", ".join(members[:-1]) + " or " + members[-1]
    return f"{words}, {level * 100:g} % set"


def coverage(labels: Sequence[int], sets: np.ndarray) -> dict:
    """Empirical coverage overall and per grade, and the mean set size."""
    labels, sets = np.asarray(labels), np.asarray(sets, dtype=bool)
    hit = sets[np.arange(len(labels)), labels]
    return {"coverage": float(hit.mean()) if len(hit) else None,
            "coverage_per_class": [float(hit[labels == k].mean()) if np.any(labels == k) else None
                                   for k in range(sets.shape[1])],
            "mean_set_size": float(sets.sum(axis=1).mean()) if len(hit) else None,
            "single_grade_share": float((sets.sum(axis=1) == 1).mean()) if len(hit) else None, "n": int(len(hit))}


#: What a set of more than one grade means for the reader.
REFER = "refer: the image alone does not settle the grade"


def from_metadata(metadata: dict, level: float | None = None) -> tuple[ConformalCalibration | None, str | None]:
    """A model package's stored calibration (at `level`, default its own), or None and why there is none. The
    block was validated and sealed when the package was loaded (``metadata_problems``)."""
    block = metadata.get("conformal")
    if level is not None:
        check_level(level)
    if block is None:
        return None, "the model package has no conformal calibration (trained before prediction sets existed)"
    if "unavailable" in block:
        return None, f"the model package has no conformal calibration ({block['unavailable']})"
    calibration = ConformalCalibration.from_dict(block, n_classes=len(metadata["class_names"]))
    return (calibration if level is None else calibration.at_level(level)), None


def case_set(calibration: ConformalCalibration | None, probs: Sequence[float], class_names: Sequence[str],
             reason: str | None = None) -> dict:
    """One case's prediction set as ``result.json`` holds it: the grades, the level, the set in plain words
    and whether it says refer (more than one grade). Without a calibration: no set, and `reason`."""
    if calibration is None:
        return {"prediction_set": None, "prediction_set_level": None,
                "prediction_set_text": f"no prediction set: {reason or 'no calibration'}"}
    members = [name for name, inside in zip(class_names, prediction_sets(calibration, np.asarray([probs]))[0])
               if inside]
    text = describe(members, calibration.level)
    return {"prediction_set": members, "prediction_set_level": calibration.level,
            "prediction_set_text": text if len(members) == 1 else f"{REFER} ({text})"}
