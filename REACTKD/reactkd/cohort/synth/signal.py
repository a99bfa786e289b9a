"""Measure the grade signal of synthetic cases: hand-made tumour features and cross-validated macro AUC.

Used by benchmarks/signal_design.py and the signal test, so both measure the same thing.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from reactkd.cohort.synth.case import SyntheticCase

CT_FEATURES = ("hu_minus_liver", "hu_std", "p10_minus_liver", "p90_minus_liver", "log_volume_ml",
               "low_attenuation_fraction", "surface_to_volume", "local_texture_hu")
#: Necrosis shows as tumour voxels this far below the liver's median attenuation.
LOW_ATTENUATION_HU = 30.0
PET_FEATURES = ("suv_fdg_mean", "suv_act_mean", "fdg_to_liver", "act_to_liver")


def pet_on_ct(pet: sitk.Image, ct: sitk.Image) -> np.ndarray:
    """PET resampled (linear, physical space) onto the CT grid, as a (z, y, x) array."""
    return sitk.GetArrayFromImage(sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def _surface_to_volume(tumour: np.ndarray) -> float:
    """Boundary voxels over volume^(2/3): larger for lobulated margins than for a smooth ellipsoid."""
    from scipy import ndimage

    boundary = tumour & ~ndimage.binary_erosion(tumour)
    return float(boundary.sum() / max(tumour.sum(), 1) ** (2 / 3))


def _local_texture(hu: np.ndarray, tumour: np.ndarray) -> float:
    """Median absolute difference between a voxel and the mean of its 3^3 neighbourhood, inside the tumour."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(hu.astype(np.float32), 3)
    return float(np.median(np.abs(hu - smooth)[tumour]))


def ct_tumour_features(ct: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """CT_FEATURES of all tumour voxels (mask label 2); attenuations relative to the liver's median (label 1),
    since contrast timing varies between scans."""
    labels = sitk.GetArrayViewFromImage(mask)
    tumour = labels == 2
    volume = sitk.GetArrayViewFromImage(ct)
    hu = volume[tumour]
    liver = float(np.median(volume[labels == 1]))
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    p10, p90 = np.percentile(hu, [10, 90])
    return np.array([hu.mean() - liver, hu.std(), p10 - liver, p90 - liver, np.log(tumour.sum() * voxel_ml),
                     float(np.mean(hu < liver - LOW_ATTENUATION_HU)), _surface_to_volume(tumour),
                     _local_texture(volume, tumour)])


def pet_tumour_features(ct: sitk.Image, mask: sitk.Image, pet_fdg: sitk.Image, pet_act: sitk.Image) -> np.ndarray:
    """PET_FEATURES: mean SUV of each tracer in the tumour on the CT grid, and each over the liver's median."""
    labels = sitk.GetArrayViewFromImage(mask)
    tumour = labels == 2
    # Resample PET onto the tumours' bounding box of the CT grid only (a cropped sitk image keeps its
    # physical placement): the same values as a whole-grid resampling, at a fraction of the cost.
    lo, hi = np.argwhere(tumour).min(axis=0), np.argwhere(tumour).max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    reference = ct[box[2], box[1], box[0]]
    uptake = [float(pet_on_ct(image, reference)[tumour[box]].mean()) for image in (pet_fdg, pet_act)]
    liver_uptake = [float(np.median(pet_on_ct(image, ct)[labels == 1])) for image in (pet_fdg, pet_act)]
    return np.array([*uptake, *(u / max(v, 1e-3) for u, v in zip(uptake, liver_uptake))])


def tumour_features(case: SyntheticCase) -> tuple[np.ndarray, np.ndarray]:
    """(CT features, PET features) of a synthetic case; see CT_FEATURES and PET_FEATURES."""
    return (ct_tumour_features(case.ct, case.mask),
            pet_tumour_features(case.ct, case.mask, case.pet_fdg, case.pet_act))


def cross_validated_auc(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
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
