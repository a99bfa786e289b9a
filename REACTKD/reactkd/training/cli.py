"""`reactkd train`: configuration, fold split, cohort cache, frozen teachers, the loop, the model package."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..devices import resolve_device
from ..errors import ConfigError, ModelPackageError
from ..manifest import read_manifest
from ..packaging import load_package
from .config import load_config
from .data import load_cohort
from .distributed import DistContext
from .engine import Trainer
from .folds import split_fold
from .progress import Progress
from .stages import make_stage

TEACHER_STAGES = {"teacher_sf": "teacher-sf", "teacher_dose": "teacher-dose"}


def load_teacher(path: Path | None, expected_stage: str, device: torch.device, preprocessing: dict):
    if path is None:
        raise ConfigError(f"the student stage needs --{expected_stage} (a trained {expected_stage} package)")
    package = load_package(path, device=str(device))
    if package.metadata.get("stage") != expected_stage:
        raise ModelPackageError(f"{path}: expected a {expected_stage} package, got {package.metadata.get('stage')!r}")
    if package.metadata["preprocessing"] != preprocessing:
        raise ModelPackageError(f"{path}: the teacher was trained with other preprocessing settings "
                                f"({package.metadata['preprocessing']}) than this config ({preprocessing})")
    return package.model


def run_train(args: argparse.Namespace) -> Path:
    config = load_config(args.config, epochs=args.epochs, seed=args.seed)
    device = resolve_device(args.device)
    dist_ctx = DistContext.from_env(device.type)
    if dist_ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    records = read_manifest(args.manifest)
    train_idx, val_idx = split_fold(records, args.fold, args.folds, seed=config.seed)
    progress = Progress(args.progress, enabled=dist_ctx.is_main)
    preprocess = config.preprocess_config()
    cache_dir = Path(os.environ.get("REACTKD_CACHE", args.manifest.resolve().parent / ".reactkd-cache"))
    cohort = load_cohort(records, preprocess, config.graph, cache_dir=cache_dir,
                         progress=lambda i, n: progress.emit("preprocess", done=i, total=n))
    if device.type == "cuda":
        cohort = _place_cohort(cohort, device)
    teachers = []
    if args.stage == "student":
        teachers = [load_teacher(args.teacher_sf, "teacher-sf", device, preprocess.to_dict()),
                    load_teacher(args.teacher_dose, "teacher-dose", device, preprocess.to_dict())]
    torch.manual_seed(config.seed)  # identical initial weights on every rank and every run
    stage = make_stage(args.stage, config, teachers)
    trainer = Trainer(stage, cohort, train_idx, val_idx, config, args.out, device, progress, dist_ctx)
    result = trainer.run(resume=args.resume)
    out = Path(args.out)
    if dist_ctx.is_main:
        summary = {"manifest": str(args.manifest), "fold": args.fold, "folds": args.folds,
                   "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx), "device": str(device),
                   "world_size": dist_ctx.world_size}
        trainer.write_package(result, summary)
        progress.done(model_dir=str(out.resolve()), best_epoch=result.best_epoch,
                      best_val_macro_auc=result.best_auc)
        if progress.mode != "json":
            print(f"wrote model package {out} (best epoch {result.best_epoch + 1}, "
                  f"validation macro AUC {result.best_auc:.3f})")
    dist_ctx.barrier()
    dist_ctx.close()
    return out


def _place_cohort(cohort, device: torch.device):
    """Keep the whole cohort on the GPU when it takes under a quarter of the free memory: no loader at all."""
    nbytes = sum(t.element_size() * t.nelement() for t in (cohort.images, cohort.ct_hu, cohort.node_index))
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes < free / 4:
        for name in ("images", "available", "ct_hu", "node_index", "n_nodes", "labels", "spacing"):
            setattr(cohort, name, getattr(cohort, name).to(device))
        return cohort
    return cohort.pin()
