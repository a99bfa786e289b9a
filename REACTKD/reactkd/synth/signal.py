"""Measure the grade signal of synthetic cases: hand-made tumour features and cross-validated macro AUC.

Used by benchmarks/signal_design.py and the signal test, so both measure the same thing.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .case import SyntheticCase

CT_FEATURES = ("hu_mean", "hu_std", "hu_p10", "hu_p50", "hu_p90", "log_volume_ml")
PET_FEATURES = ("suv_fdg_mean", "suv_act_mean")


def pet_on_ct(pet: sitk.Image, ct: sitk.Image) -> np.ndarray:
    """PET resampled (linear, physical space) onto the CT grid, as a (z, y, x) array."""
    return sitk.GetArrayFromImage(sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def tumour_features(case: SyntheticCase) -> tuple[np.ndarray, np.ndarray]:
    """(CT features, PET features) of all tumour voxels of a case; see CT_FEATURES and PET_FEATURES."""
    tumour = sitk.GetArrayViewFromImage(case.mask) == 2
    hu = sitk.GetArrayViewFromImage(case.ct)[tumour]
    voxel_ml = float(np.prod(case.ct.GetSpacing())) / 1000.0
    p10, p50, p90 = np.percentile(hu, [10, 50, 90])
    ct = np.array([hu.mean(), hu.std(), p10, p50, p90, np.log(tumour.sum() * voxel_ml)])
    # Resample PET onto the tumours' bounding box of the CT grid only (a cropped sitk image keeps its
    # physical placement): the same values as a whole-grid resampling, at a fraction of the cost.
    lo, hi = np.argwhere(tumour).min(axis=0), np.argwhere(tumour).max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    reference = case.ct[box[2], box[1], box[0]]
    pet = np.array([pet_on_ct(image, reference)[tumour[box]].mean() for image in (case.pet_fdg, case.pet_act)])
    return ct, pet


def macro_auc(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Macro one-vs-rest AUC of out-of-fold logistic-regression probabilities (stratified k-fold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")
    return float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
