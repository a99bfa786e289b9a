"""Classify one case: probabilities, CBAM attention, Grad-CAM and the region graph, all on the native CT grid.

The model package is loaded (checksum verified) once per Classifier; preprocessing is the training code's
`preprocess_case`, and maps go back to the CT grid through its inverse mapping `to_native`. A CUDA
out-of-memory error moves the model to the CPU and retries once, with a warning in the result.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from reactkd.conformal import case_set, check_level, from_metadata
from reactkd.devices import is_out_of_memory, resolve_device
from reactkd.errors import ModelPackageError, ReactKDError
from reactkd.graph import RegionSet, head_region_labels
from reactkd.inference.input_checks import segmentation_warnings
from reactkd.inference.region_graph import case_regions, region_graph
from reactkd.inference.result import ClassificationResult
from reactkd.inference.what_if import what_if_probabilities, what_if_subsets, what_if_table
from reactkd.memory import check_memory, classify_peak_bytes
from reactkd.models.base import pooled_features
from reactkd.ood import InputProfile
from reactkd.package.model_package import load_package
from reactkd.preprocessing import (
    PreprocessConfig,
    PreprocessedCase,
    box_to_native,
    preprocess_case,
    to_native,
)
from reactkd.temperature import package_temperature
from reactkd.vocabulary import DEFAULT_MODEL, INTENDED_USE

__all__ = ["DEFAULT_MODEL", "ClassificationResult", "Classifier"]

#: Probabilities whose largest and smallest differ by at most this are a tie, not a grade.
DEGENERATE_SPREAD = 1e-6


class Classifier:
    """A loaded model package ready to classify cases. Calls are serialised by a lock (the networks keep
    their last attention map as state), so one instance may be shared between threads.

    Args:
        model_dir: a model package folder (default: the shipped CT student).
        device: "auto" (CUDA when usable, else CPU), "cuda" or "cpu".
        set_level: nominal coverage of the prediction sets (default: the level the package was calibrated at).

    Example:
        >>> from reactkd.cohort.synth import generate_case
        >>> case = generate_case(seed=0, label=1)
        >>> result = Classifier(device="cpu").classify(case.ct, case.mask)
        >>> result.grade in ("well", "moderate", "poor"), round(sum(result.probabilities.values()), 6)
        (True, 1.0)
    """

    def __init__(self, model_dir: str | Path | None = None, device: str = "auto",
                 set_level: float | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir else DEFAULT_MODEL
        if set_level is not None:
            check_level(set_level)  # before the package is loaded: a typo costs nothing
        self.device = resolve_device(device)
        self.package = load_package(self.model_dir, device=str(self.device))
        self.metadata = self.package.metadata
        try:
            self.preprocess = PreprocessConfig.from_dict(self.metadata["preprocessing"])
        except (TypeError, ValueError, AttributeError, ReactKDError) as exc:
            raise ModelPackageError(f"{self.model_dir}: invalid preprocessing settings in metadata ({exc})") from None
        self.graph_settings = self.metadata.get("graph", {})
        self.conformal, self.no_set_reason = from_metadata(self.metadata, set_level)
        self.temperature = package_temperature(self.metadata)
        profile = self.metadata.get("input_profile")
        self.profile = InputProfile.from_dict(profile) if profile is not None else None
        # Convolutions run ~1.25x faster channels-last on CPU (oneDNN); the Swin teachers gain nothing from it.
        self._memory_format = torch.channels_last_3d if self.metadata["architecture"] == "student" else \
            torch.contiguous_format
        self.model.to(memory_format=self._memory_format)
        self._cam = None
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    @property
    def model(self) -> torch.nn.Module:
        return self.package.model

    def _check_modalities(self, pet_fdg, pet_act) -> list[str]:
        needs_pet = self.metadata["architecture"] == "sf_teacher"
        if needs_pet and pet_fdg is None and pet_act is None:
            raise ModelPackageError(f"model {self.metadata['name']!r} needs FDG or acetate PET; none was given")
        notes = []
        usable = set(self.metadata["input_modalities"])
        for name, image in (("pet_fdg", pet_fdg), ("pet_act", pet_act)):
            if image is not None and name not in usable:
                notes.append(f"{name} given but model {self.metadata['name']!r} does not use it; ignored")
        return notes

    def classify(self, ct: sitk.Image, mask: sitk.Image, pet_fdg: sitk.Image | None = None,
                 pet_act: sitk.Image | None = None, maps_on_ct_grid: bool = True) -> ClassificationResult:
        """Grade one case. With ``maps_on_ct_grid=False`` the two maps cover only the crop box of the CT grid
        (their geometry places them on it; zero elsewhere): what `serve` sends, so that the full-size maps are
        built once, by whoever needs them."""
        with self._lock:
            notes = self._check_modalities(pet_fdg, pet_act)
            size = " x ".join(map(str, ct.GetSize()))
            check_memory(classify_peak_bytes(ct.GetNumberOfPixels()), f"classifying a CT of {size} voxels",
                         "crop or resample the CT around the liver first, or use a machine with more memory")
            usable = set(self.metadata["input_modalities"])
            fdg = pet_fdg if "pet_fdg" in usable else None
            act = pet_act if "pet_act" in usable else None
            timings: dict[str, float] = {}
            start = time.perf_counter()
            case = preprocess_case(ct, mask, fdg, act, self.preprocess)
            timings["preprocess"] = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            regions = case_regions(case, self.graph_settings)
            timings["regions"] = (time.perf_counter() - start) * 1000
            try:
                outputs = self._infer(case, regions, timings)
            except RuntimeError as exc:
                if self.device.type != "cuda" or not is_out_of_memory(exc):
                    raise
                torch.cuda.empty_cache()
                notes.append("CUDA ran out of memory; this case was classified on the CPU")
                self.device = torch.device("cpu")
                self.model.to(self.device)
                outputs = self._infer(case, regions, timings)
            notes += segmentation_warnings(case, sitk.GetArrayViewFromImage(mask), mask.GetSpacing())
            outputs["out_of_distribution"] = self._distance(outputs["features"], ct.GetSpacing(), notes)
            return self._assemble(case, regions, outputs, timings, notes, maps_on_ct_grid)

    def _distance(self, features: torch.Tensor, spacing_xyz, notes: list[str]) -> dict:
        """The case's out-of-distribution score against the package's input profile (``reactkd.ood``); its
        warnings (spacing outside the training range, a score above the threshold) go to `notes`."""
        if self.profile is None:
            return {"unavailable": "the model package has no input profile (trained before it existed)"}
        score = float(self.profile.distance(pooled_features(features[None]).cpu().numpy())[0])
        notes += self.profile.warnings(spacing_xyz, score)
        return {"score": round(score, 3), "threshold": round(self.profile.threshold, 3),
                "flagged": score > self.profile.threshold}

    def _gradcam(self):
        """MONAI's GradCAM on this classifier's model, built once: it registers hooks on the model that it never
        removes, so building one per call would pile them up."""
        if self._cam is None:
            from reactkd.models.gradcam import GradCamAdapter, grad_cam

            adapter = GradCamAdapter(self.model, backward_from_cam_layer=True)
            self._cam = adapter, grad_cam(adapter)
        return self._cam

    def _infer(self, case: PreprocessedCase, regions: RegionSet, timings: dict[str, float]) -> dict:
        """One forward pass gives the logits, the CBAM attention, the features and (with one backward pass from the
        class score down to the explained layer, the liver-referenced input) the Grad-CAM map of the predicted class."""
        adapter, gradcam = self._gradcam()
        images = torch.from_numpy(case.images)[None].to(self.device, memory_format=self._memory_format)
        available = torch.from_numpy(case.available)[None].to(self.device)
        region_labels = torch.from_numpy(head_region_labels(regions))[None].to(self.device)
        start = time.perf_counter()
        with torch.enable_grad():
            cam = gradcam(images, class_idx=None, available=available, region_labels=region_labels)
        out = adapter.last_output
        probs = torch.softmax(out.logits.detach().float() / self.temperature, dim=1)[0]
        outputs = {"probs": probs.cpu().numpy(), "class_index": int(gradcam.nn_module.class_idx[0]),
                   "attention": self.model.attention_map()[0, 0].detach().float().cpu().numpy(),
                   "features": out.features[0].detach().float(), "gradcam": cam[0, 0].detach().float().cpu().numpy()}
        adapter.last_output = None  # do not keep the case's tensors alive between calls
        timings["forward_gradcam"] = (time.perf_counter() - start) * 1000
        subsets, missing, reason = what_if_subsets(self.metadata, case.available)
        asked = np.zeros((0, len(self.metadata["class_names"])))
        if subsets:
            start = time.perf_counter()
            asked = what_if_probabilities(self.model, images, region_labels, subsets, self._memory_format,
                                          self.temperature)
            timings["what_if"] = (time.perf_counter() - start) * 1000
        outputs["what_if"] = what_if_table(subsets, asked, list(self.metadata["class_names"]), missing, reason)
        return outputs

    def _assemble(self, case: PreprocessedCase, regions: RegionSet, outputs: dict, timings: dict[str, float],
                  notes: list[str], maps_on_ct_grid: bool = True) -> ClassificationResult:
        if not all(np.isfinite(outputs[key]).all() for key in ("probs", "attention", "gradcam")):
            # NaN or huge weights behind a matching checksum: no grade is better than a meaningless one.
            raise ModelPackageError(f"model {self.metadata['name']!r} produced non-finite outputs (NaN or infinity) "
                                    "on this case; its weights are unusable")
        probs = outputs["probs"].astype(float)
        if float(probs.max() - probs.min()) <= DEGENERATE_SPREAD:
            # Equal probabilities (int8 or zeroed weights, a constant network): argmax would name the first
            # class as if it had been chosen. Refused, not warned: a grade must never come from a tie.
            raise ModelPackageError(f"model {self.metadata['name']!r} gave every grade the same probability "
                                    f"({probs[0]:.4f}) on this case: no grade can be given; its weights are unusable")
        start = time.perf_counter()
        cbam = _unit_range(outputs["attention"])
        gradcam = _unit_range(outputs["gradcam"])
        graph = region_graph(regions, outputs["features"], gradcam)
        timings["graph"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        onto = to_native if maps_on_ct_grid else box_to_native
        cbam_native = onto(cbam, case.grid, case.native, case.crop_index)
        gradcam_native = onto(gradcam, case.grid, case.native, case.crop_index)
        timings["to_native"] = (time.perf_counter() - start) * 1000
        names = list(self.metadata["class_names"])
        probs = probs / probs.sum()
        inputs = [m for m, flag in zip(("ct", "pet_fdg", "pet_act"), case.available) if flag]
        model_info = {"name": self.metadata["name"], "version": self.metadata["version"],
                      "sha256": self.metadata["sha256"], "metadata_sha256": self.metadata["metadata_sha256"],
                      "intended_use": self.metadata.get("intended_use", INTENDED_USE)}
        timings = {k: round(v, 1) for k, v in timings.items()}
        timings["total"] = round(sum(timings.values()), 1)
        return ClassificationResult(
            grade=names[outputs["class_index"]], class_index=outputs["class_index"], class_names=names,
            probabilities={n: float(p) for n, p in zip(names, probs)}, attention_cbam=cbam_native,
            attention_gradcam=gradcam_native, graph=graph, model=model_info, device=str(self.device),
            inputs=inputs, timings_ms=timings, warnings=notes + case.warnings, preprocessed=case,
            **case_set(self.conformal, probs, names, self.no_set_reason), what_if=outputs["what_if"],
            out_of_distribution=outputs["out_of_distribution"])


def _unit_range(volume: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant map becomes 0)."""
    volume = np.nan_to_num(volume.astype(np.float32))
    low, high = float(volume.min()), float(volume.max())
    if high - low < 1e-12:
        return np.zeros_like(volume)
    return (volume - low) / (high - low)
