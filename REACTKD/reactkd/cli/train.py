"""`reactkd train`: configuration, fold split, cohort cache, frozen teachers, the loop, the model package."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from reactkd.cohort.cache import TENSOR_FIELDS, cohort_cache_dir, load_cohort
from reactkd.cohort.folds import PackageSplit, inner_split, split_fold
from reactkd.cohort.manifest import read_manifest
from reactkd.devices import resolve_device
from reactkd.errors import ConfigError, ModelPackageError
from reactkd.memory import check_memory, gib, training_peak_bytes
from reactkd.package.model_package import load_package
from reactkd.progress import Progress
from reactkd.training.config import load_config
from reactkd.training.distributed import DistContext
from reactkd.training.engine import Trainer
from reactkd.training.stages import make_stage
from reactkd.training.teacher_cache import load_or_build
from reactkd.vocabulary import STUDENT, TEACHER_DOSE, TEACHER_SF


def load_teacher(path: Path | None, expected_stage: str, device: torch.device, preprocessing: dict,
                 split: PackageSplit):
    """The verified teacher package (its model and metadata, sha256 included), trained without the student's
    test cases (same ``split``): a teacher that saw them would leak them into the student's targets."""
    if path is None:
        raise ConfigError(f"the student stage needs --{expected_stage} (a trained {expected_stage} package)")
    package = load_package(path, device=str(device))
    if package.metadata.get("stage") != expected_stage:
        raise ModelPackageError(f"{path}: expected a {expected_stage} package, got {package.metadata.get('stage')!r}")
    if package.metadata["preprocessing"] != preprocessing:
        raise ModelPackageError(f"{path}: the teacher was trained with other preprocessing settings "
                                f"({package.metadata['preprocessing']}) than this config ({preprocessing})")
    trained_on = PackageSplit.of(package.metadata)
    if trained_on is None:
        print(f"note: {path} has no training record, so nothing shows that it never saw this student's test "
              f"cases ({split.describe()})", file=sys.stderr)
    elif (trained_on.fold, trained_on.folds, trained_on.seed) != (split.fold, split.folds, split.seed) \
            or not trained_on.same_cases_as(split):
        raise ModelPackageError(f"{path}: the teacher was trained with {trained_on.describe()}, the student with "
                                f"{split.describe()} (or on another manifest), so the teacher has seen some of the "
                                "student's test cases; train both with the same --fold, --folds, --seed and manifest")
    return package


def run_train(args: argparse.Namespace) -> Path:
    from reactkd.output_paths import check_output

    check_output(args.out, folder=True, inputs=[args.manifest, args.config, args.teacher_sf, args.teacher_dose],
                 names=("model.safetensors", "metadata.json"))
    config = load_config(args.config, epochs=args.epochs, seed=args.seed)
    device = resolve_device(args.device)
    dist_ctx = DistContext.from_env(device.type)
    if dist_ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    records = read_manifest(args.manifest)
    train_part, test_idx = split_fold(records, args.fold, args.folds, seed=config.seed)
    train_idx, val_idx = inner_split(records, train_part, config.inner_val_fraction, seed=config.seed)
    progress = Progress(args.progress, enabled=dist_ctx.is_main)
    preprocess = config.preprocess_config()
    status = _status_printer(args.progress, dist_ctx.is_main)
    check_training_memory(args.stage, config, preprocess.grid, len(records), device, status)
    cache_dir = cohort_cache_dir(args.manifest)

    def cohort_progress(done: int, total: int) -> None:
        progress.emit("preprocess", done=done, total=total)
        status(f"preparing the cohort cache: {done}/{total}", final=done == total)

    cohort = load_cohort(records, preprocess, config.graph, cache_dir=cache_dir, progress=cohort_progress)
    if args.stage == TEACHER_DOSE:
        from reactkd.cohort.doses import load_dose_cache

        def dose_progress(done: int, total: int) -> None:
            progress.emit("low-dose", done=done, total=total)
            status(f"simulating low-dose CTs at doses {config.doses}: {done}/{total}", final=done == total)

        cohort.dose_ct = torch.from_numpy(load_dose_cache(records, preprocess, config.doses, cohort.key, cache_dir,
                                                          progress=dose_progress))
    if device.type == "cuda":
        cohort = _place_cohort(cohort, device)
    targets = None
    test_cases = [records[i].case_id for i in test_idx]
    if args.stage == STUDENT and (config.alpha > 0 or config.lambda_graph > 0):
        split = PackageSplit(args.fold, args.folds, config.seed, frozenset(test_cases))
        packages = [load_teacher(args.teacher_sf, TEACHER_SF, device, preprocess.to_dict(), split),
                    load_teacher(args.teacher_dose, TEACHER_DOSE, device, preprocess.to_dict(), split)]
        progress.emit("section", name="teacher cache")
        targets = load_or_build(cache_dir, [p.model for p in packages], [p.metadata["sha256"] for p in packages],
                                cohort, device, notify=lambda text: print(f"note: {text}", file=sys.stderr))
        del packages  # a student step never runs a teacher
    torch.manual_seed(config.seed)  # identical initial weights on every rank and every run
    stage = make_stage(args.stage, config, targets)
    if targets is not None:
        stage.to(device)
    trainer = Trainer(stage, cohort, train_idx, val_idx, config, args.out, device, progress, dist_ctx)
    status(f"training {args.stage}: {config.epochs} epoch(s) of {trainer.steps_per_epoch} step(s) on {device}",
           final=True)
    result = trainer.run(resume=args.resume)
    out = Path(args.out)
    if dist_ctx.is_main:
        summary = {"manifest": str(args.manifest), "fold": args.fold, "folds": args.folds,
                   "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx), "n_test": len(test_idx),
                   "test_cases": test_cases,
                   "selection": "inner validation split of the fold's training part; the test part is unseen",
                   "device": str(device),
                   "world_size": dist_ctx.world_size}
        if args.stage == TEACHER_DOSE:
            from reactkd.cohort.doses import simulator_settings

            summary["low_dose"] = {"doses": list(config.doses), "simulated_on": "native CT, before preprocessing",
                                   **simulator_settings()}
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
    names = [*TENSOR_FIELDS, *(["dose_ct"] if cohort.dose_ct is not None else [])]
    nbytes = sum(getattr(cohort, name).element_size() * getattr(cohort, name).nelement() for name in names)
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes < free / 4:
        for name in names:
            setattr(cohort, name, getattr(cohort, name).to(device))
        return cohort
    return cohort.pin()


def _status_printer(mode: str, enabled: bool):
    """Plain status lines on stderr from the first second, for `--progress auto` or `tqdm` (JSON mode has its
    events, `none` asks for silence); repeated lines at most one a second, the last always."""
    quiet = not enabled or mode in ("json", "none")
    last = [0.0]

    def status(text: str, final: bool = False) -> None:
        now = time.monotonic()
        if not quiet and (final or now - last[0] >= 1.0):
            last[0] = now
            print(text, file=sys.stderr, flush=True)

    return status


def check_training_memory(stage: str, config, grid, n_cases: int, device: torch.device, status) -> None:
    """Refuse, before any case is read, a run whose estimated peak memory (docs/reliability.md) is more than the
    machine (or, for a CUDA run, the GPU) has; say what it needs from the first second either way."""
    network = config.student if stage == STUDENT else config.teacher
    n_doses = len(config.doses) if stage == TEACHER_DOSE else 0
    host, step = training_peak_bytes(stage, network, grid, config.batch_size, n_cases, n_doses)
    grid_text = " x ".join(map(str, grid))
    fix = ("use a smaller config (e.g. reactkd/configs/demo.yaml: grid 32 x 64 x 64, feature_size 12), a smaller "
           "batch_size or preprocessing grid")
    if device.type == "cuda":
        check_memory(host, f"training {stage} ({n_cases} cases on a {grid_text} grid)", fix)
        step //= 2  # bf16 autocast
        free, _ = torch.cuda.mem_get_info(device)
        if step > free and os.environ.get("REACTKD_MEMORY_CHECK", "1") != "0":
            raise ConfigError(f"training {stage} (batch_size {config.batch_size} on a {grid_text} grid) needs about "
                              f"{gib(step)} of GPU memory, but {device} has {gib(free)} free; {fix}")
    else:
        check_memory(host + step, f"training {stage} on the CPU (batch_size {config.batch_size} on a {grid_text} "
                     f"grid, {n_cases} cases)", fix + ", or train on a GPU with --device cuda")
    status(f"estimated peak memory: {gib(host)} on the host, {gib(step)} per step on {device}", final=True)
