"""`reactkd evaluate`: batched predictions of a model package on a cohort, per modality subset and per
simulated dose level, then metrics.json and figures through `write_evaluation_report`."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np
import torch

from reactkd.cohort.cache import CohortTensors, cohort_cache_dir, load_cohort, read_record
from reactkd.cohort.manifest import read_manifest
from reactkd.devices import resolve_device
from reactkd.errors import ConfigError
from reactkd.evaluation.report import write_evaluation_report
from reactkd.graph.settings import GraphSettings
from reactkd.package.model_package import load_package
from reactkd.preprocessing import PreprocessConfig
from reactkd.progress import Progress
from reactkd.temperature import package_temperature
from reactkd.vocabulary import MODALITY_SUBSETS

SUBSETS = MODALITY_SUBSETS
BATCH = 8


def parse_subsets(text: str) -> list[str]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SUBSETS]
    if unknown or not names:
        raise ConfigError(f"unknown modality subset(s) {', '.join(unknown) or text!r}; use {', '.join(SUBSETS)}")
    return names


@torch.no_grad()
def predict(model, images: torch.Tensor, available: torch.Tensor, region_labels: torch.Tensor,
            device: torch.device, temperature: float = 1.0) -> np.ndarray:
    """Softmax probabilities (of logits / `temperature`, the package's) for a stack of cases, in batches (bf16
    autocast on CUDA)."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    out = []
    for start in range(0, len(images), BATCH):
        x = images[start:start + BATCH].to(device, non_blocking=True)
        a = available[start:start + BATCH].to(device)
        regions = region_labels[start:start + BATCH].to(device)
        with autocast:
            logits = model(x, a, regions).logits
        out.append(torch.softmax(logits.float() / temperature, dim=1).cpu())
    return torch.cat(out).numpy()


def subset_inputs(cohort: CohortTensors, subset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cases that have every modality of the subset, with the other modalities zeroed and flagged absent."""
    wanted = torch.tensor(SUBSETS[subset])
    has_all = (cohort.available | ~wanted).all(dim=1) if subset != "all" else torch.ones(len(cohort), dtype=torch.bool)
    keep = torch.nonzero(has_all).flatten()
    available = cohort.available[keep] & wanted
    images = cohort.images[keep] * available[:, :, None, None, None]
    return keep, images, available


def dose_inputs(records, preprocess: PreprocessConfig, doses, seed: int = 0,
                progress=None) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """CT-only model inputs of every record at every dose: each case is read once and every dose simulated
    from it in memory by `cohort.doses.dose_ct_channels`, the function the dose teacher's training cache uses."""
    from reactkd.cohort.doses import check_doses, dose_ct_channels

    doses = check_doses(doses)
    channels = []
    for index, record in enumerate(records):
        ct, mask, _, _ = read_record(record, with_pet=False)
        channels.append(torch.from_numpy(dose_ct_channels(ct, mask, doses, preprocess, record.case_id, seed)))
        if progress:
            progress(index + 1, len(records))
    stacked = torch.stack(channels)  # (N, n_doses, D, H, W)
    available = torch.tensor([True, False, False]).expand(len(records), 3).clone()
    out = {}
    for k, dose in enumerate(doses):
        images = torch.zeros((len(records), 3, *stacked.shape[2:]), dtype=stacked.dtype)
        images[:, 0] = stacked[:, k]
        out[dose] = (images, available)
    return out


def run_evaluate(args: argparse.Namespace) -> dict:
    from reactkd.output_paths import check_output

    check_output(args.out, folder=True, inputs=[args.manifest, args.model], names=("metrics.json",))
    subsets = parse_subsets(args.modalities)
    device = resolve_device(args.device)
    progress = Progress(args.progress)
    package = load_package(args.model, device=str(device))
    meta = package.metadata
    records = read_manifest(args.manifest)
    fold = getattr(args, "fold", None)
    if fold is not None:
        from reactkd.cohort.folds import PackageSplit

        split = PackageSplit.of(meta)
        if split is None:
            raise ConfigError(f"{args.model}: the package has no training record (metadata 'training'), so the folds "
                              "it was trained on are unknown; evaluate without --fold")
        folds = split.folds if args.folds is None else args.folds
        if (fold, folds) != (split.fold, split.folds):
            raise ConfigError(f"{args.model} was trained with {split.describe()}; fold {fold} of {folds} holds cases "
                              f"it was trained on: use --fold {split.fold} --folds {split.folds}")
        records = [records[i] for i in split.held_out(records, str(args.manifest))]
    preprocess = PreprocessConfig.from_dict(meta["preprocessing"])
    temperature = package_temperature(meta)  # what classify applies
    graph = GraphSettings.from_metadata(meta.get("graph"))
    cohort = load_cohort(records, preprocess, graph, cache_dir=cohort_cache_dir(args.manifest),
                         progress=lambda i, n: progress.emit("preprocess", done=i, total=n))
    labels = cohort.labels.numpy()
    needs_pet = meta["architecture"] == "sf_teacher"
    modalities: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for subset in subsets:
        if needs_pet and subset == "ct" or not needs_pet and subset != "ct" and meta["input_modalities"] == ["ct"]:
            continue  # a combination this model cannot use
        keep, images, available = subset_inputs(cohort, subset)
        if needs_pet:
            has_pet = available[:, 1:].any(dim=1)
            keep, images, available = keep[has_pet], images[has_pet], available[has_pet]
        if len(keep):
            modalities[subset] = (labels[keep.numpy()], predict(package.model, images, available,
                                                                cohort.region_labels[keep], device, temperature))
        progress.emit("section", name=f"modalities {subset}", n=len(keep))
    doses: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    if not needs_pet and args.doses:
        inputs = dose_inputs(records, preprocess, args.doses,
                             progress=lambda i, n: progress.emit("low-dose", done=i, total=n))
        for dose, (images, available) in inputs.items():
            doses[dose] = (labels, predict(package.model, images, available, cohort.region_labels, device,
                                           temperature))
            progress.emit("section", name=f"dose {dose:g}", n=len(labels))
    # "overall": the deployment input of the model (CT alone; all available PET for the SF teacher).
    preferred = ("all", "ct+fdg", "ct+act") if needs_pet else ("ct",)
    overall_key = next((k for k in preferred if k in modalities), next(iter(modalities), None))
    if overall_key is None:
        raise ConfigError("no case has the modalities this model needs")
    from reactkd.conformal import from_metadata

    conformal, no_set_reason = from_metadata(meta)
    report = write_evaluation_report(args.out, {"overall": modalities[overall_key]}, meta["class_names"],
                                     doses=doses or None, modalities=modalities, conformal=conformal,
                                     no_set_reason=no_set_reason or "")
    auc = report["sections"]["overall"]["auc_macro"] if "sections" in report else None
    progress.done(out=str(Path(args.out).resolve()), auc_macro=auc)
    if progress.mode != "json":
        print(f"wrote {Path(args.out) / 'metrics.json'} ({len(labels)} cases; macro AUC {auc})")
        sets = report["sections"]["overall"]["prediction_sets"]
        if "coverage" in sets:
            low, high = sets["coverage_ci95"]
            print(f"prediction sets ({sets['level']:.0%}): coverage {sets['coverage']:.3f} [{low:.3f}, {high:.3f}], "
                  f"mean set size {sets['mean_set_size']:.2f}")
    return report
