"""How far a case lies from the cases a model was trained on: the input profile a package stores.

- Voxel spacing: the in-plane pixel size and slice thickness ranges of the training (fit) cases.
- Out-of-distribution score: the Mahalanobis distance of the case's pooled deepest features (what the model's
  head reads, ``models.base.pooled_features``) to the fit cases, in their first principal components (a
  distance in all C feature dimensions from ~150 cases is mostly noise). The threshold is the 95th percentile
  of the inner-validation cases' distances, so about 1 in 20 cases like the training ones is flagged: it says
  "unlike what the model saw", never "wrong".

Numbers only (NumPy): training builds a profile, inference applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "mahalanobis distance of pooled deepest features in the fit cases' principal components"
COMPONENTS = 16
QUANTILE = 0.95
#: Spacing within this factor of the training range counts as inside it (scanners round differently).
SPACING_TOLERANCE = 1.05


@dataclass(frozen=True)
class InputProfile:
    pixel_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    mean: np.ndarray          # (C,)
    components: np.ndarray    # (k, C) orthonormal rows
    variances: np.ndarray     # (k,)
    threshold: float
    n_fit: int
    n_val: int

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) distances of pooled features (N, C)."""
        projected = (np.atleast_2d(features) - self.mean) @ self.components.T
        return np.sqrt(np.sum(projected ** 2 / self.variances, axis=1))

    def warnings(self, spacing_xyz, distance: float) -> list[str]:
        found = []
        pixel, thickness = min(spacing_xyz[:2]), spacing_xyz[2]
        for what, value, (low, high) in (("pixel size", pixel, self.pixel_mm),
                                         ("slice thickness", thickness, self.slice_mm)):
            if not low / SPACING_TOLERANCE <= value <= high * SPACING_TOLERANCE:
                found.append(f"{what} {value:.2f} mm lies outside the training cases' {low:.2f}-{high:.2f} mm")
        if distance > self.threshold:
            found.append(f"this case is unlike the training cases (out-of-distribution score {distance:.1f} above "
                         f"{self.threshold:.1f}, which 5 % of validation cases exceed): trust the grade less")
        return found

    def to_dict(self) -> dict:
        return {"method": METHOD, "pixel_mm": list(self.pixel_mm), "slice_mm": list(self.slice_mm),
                "mean": _rounded(self.mean), "components": [_rounded(row) for row in self.components],
                "variances": _rounded(self.variances), "threshold": float(self.threshold), "quantile": QUANTILE,
                "n_fit": self.n_fit, "n_val": self.n_val}

    @classmethod
    def from_dict(cls, data: dict) -> InputProfile:
        """ValueError when `data` is not a profile of this kind."""
        if not isinstance(data, dict) or data.get("method") != METHOD:
            raise ValueError("not an input profile of this kind")
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            components = np.asarray(data["components"], dtype=np.float64)
            variances = np.asarray(data["variances"], dtype=np.float64)
            pixel, slices = (tuple(float(v) for v in data[key]) for key in ("pixel_mm", "slice_mm"))
            threshold = float(data["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"input profile: {exc}") from None
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != len(mean) or \
                variances.shape != (len(components),) or not np.all(variances > 0) or len(pixel) != 2 or \
                len(slices) != 2 or not all(np.all(np.isfinite(a)) for a in (mean, components, [threshold])):
            raise ValueError("input profile: arrays of inconsistent shape or non-finite values")
        return cls(pixel, slices, mean, components, variances, threshold, int(data.get("n_fit", 0)),
                   int(data.get("n_val", 0)))


def build_profile(fit_features: np.ndarray, val_features: np.ndarray, fit_spacings_xyz: np.ndarray,
                  components: int = COMPONENTS) -> InputProfile:
    """A profile from the fit cases' pooled features and spacings; the threshold from the validation cases."""
    fit = np.asarray(fit_features, dtype=np.float64)
    mean = fit.mean(axis=0)
    _, singular, vt = np.linalg.svd(fit - mean, full_matrices=False)
    variances = singular ** 2 / max(len(fit) - 1, 1)
    keep = min(components, int(np.sum(variances > 1e-12 * max(variances.max(), 1e-300))))
    spacings = np.asarray(fit_spacings_xyz, dtype=np.float64)
    pixel = spacings[:, :2].min(axis=1)
    profile = InputProfile((float(pixel.min()), float(pixel.max())),
                           (float(spacings[:, 2].min()), float(spacings[:, 2].max())), mean, vt[:keep],
                           variances[:keep], 0.0, len(fit), len(val_features))
    threshold = float(np.quantile(profile.distance(np.asarray(val_features, dtype=np.float64)), QUANTILE))
    return InputProfile(**{**profile.__dict__, "threshold": threshold})


def _rounded(values) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values).ravel()]
