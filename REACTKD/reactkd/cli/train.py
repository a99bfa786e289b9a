"""`reactkd train`: configuration, fold split, cohort cache, frozen teachers, the loop, the model package."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from reactkd.cohort.cache import TENSOR_FIELDS, cohort_cache_dir, load_cohort
from reactkd.cohort.folds import PackageSplit, cross_fit_parts, inner_split, split_fold
from reactkd.cohort.manifest import read_manifest
from reactkd.devices import resolve_device
from reactkd.errors import ConfigError, ModelPackageError
from reactkd.images.readers import image_spacing
from reactkd.memory import check_memory, gib, training_peak_bytes
from reactkd.package.model_package import load_package
from reactkd.progress import Progress
from reactkd.training.config import load_config
from reactkd.training.distributed import DistContext
from reactkd.training.engine import Trainer
from reactkd.training.stages import make_stage
from reactkd.training.targets import oracle_targets, plan_teachers, select_cross_fitted
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
                                "student's test cases; train both with the same --fold, --folds, --seed (or split_seed) and "
                                "manifest")
    return package


def run_train(args: argparse.Namespace) -> Path:
    from reactkd.output_paths import check_output

    given = {TEACHER_SF: list(getattr(args, "teacher_sf", None) or []),
             TEACHER_DOSE: list(getattr(args, "teacher_dose", None) or [])}
    check_output(args.out, folder=True, inputs=[args.manifest, args.config, *given[TEACHER_SF], *given[TEACHER_DOSE]],
                 names=("model.safetensors", "metadata.json"))
    config = load_config(args.config, epochs=args.epochs, seed=args.seed,
                         teacher_targets=getattr(args, "teacher_targets", None))
    cross_fit_part = getattr(args, "cross_fit_part", None)
    if cross_fit_part is not None and (args.stage == STUDENT or not 0 <= cross_fit_part < config.cross_fit_folds):
        raise ConfigError(f"--cross-fit-part takes a teacher stage and a part from 0 to {config.cross_fit_folds - 1} "
                          f"(cross_fit_folds {config.cross_fit_folds}), got {args.stage} and {cross_fit_part}")
    device = resolve_device(args.device)
    dist_ctx = DistContext.from_env(device.type)
    if dist_ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    records = read_manifest(args.manifest)
    train_part, test_idx = split_fold(records, args.fold, args.folds, seed=config.folds_seed)
    train_idx, val_idx = inner_split(records, train_part, config.inner_val_fraction, seed=config.folds_seed)
    test_cases = [records[i].case_id for i in test_idx]
    split = PackageSplit(args.fold, args.folds, config.folds_seed, frozenset(test_cases))
    cross_fit = None
    if cross_fit_part is not None:  # checked before any case is read: nothing is written on a bad request
        held_out = cross_fit_parts(records, train_idx, config.cross_fit_folds, seed=config.folds_seed)[cross_fit_part]
        train_idx = sorted(set(train_idx) - set(held_out))
        cross_fit = {"part": cross_fit_part, "folds": config.cross_fit_folds,
                     "held_out_cases": [records[i].case_id for i in held_out]}
    plan = None
    if args.stage == STUDENT and (config.alpha > 0 or config.lambda_graph > 0):
        plan = plan_teachers(config, given, records, train_idx,
                             lambda path, kind: load_teacher(path, kind, device, config.preprocess_config().to_dict(),
                                                             split))
    targets_record = plan.record() if plan is not None else {"mode": "none"}
    if args.stage == STUDENT and plan is None and any(given.values()):
        raise ConfigError("alpha and lambda_graph are 0, so the student distils nothing: give no teacher packages")
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
    targets = build_targets(plan, records, train_idx, cohort, cache_dir, device, config.rgd_map, progress)
    torch.manual_seed(config.seed)  # identical initial weights on every rank and every run
    stage = make_stage(args.stage, config, targets, plan.weights if plan is not None and plan.kinds else None)
    if targets is not None:
        stage.to(device)
    trainer = Trainer(stage, cohort, train_idx, val_idx, config, args.out, device, progress, dist_ctx)
    status(f"training {args.stage}: {config.epochs} epoch(s) of {trainer.steps_per_epoch} step(s) on {device}",
           final=True)
    result = trainer.run(resume=args.resume)
    temperature, conformal = trainer.calibrations()  # every rank: the validation predictions are gathered
    profile = trainer.input_profile([image_spacing(records[i].ct) for i in train_idx])
    out = Path(args.out)
    if dist_ctx.is_main:
        summary = {"manifest": str(args.manifest), "fold": args.fold, "folds": args.folds,
                   "n_train": len(trainer.train_idx), "n_val": len(trainer.val_idx), "n_test": len(test_idx),
                   "test_cases": test_cases,
                   "selection": "inner validation split of the fold's training part; the test part is unseen",
                   "device": str(device),
                   "world_size": dist_ctx.world_size, "train_seconds": None if result.train_seconds is None else round(result.train_seconds, 1)}
        if cross_fit is not None:
            summary["cross_fit"] = cross_fit
        if args.stage == STUDENT:
            summary["teacher_targets"] = targets_record
            summary["ct_only_exposure"] = {"setting": config.ct_only_share, "realised": stage.ct_only_exposure()}
        if args.stage == TEACHER_DOSE:
            from reactkd.cohort.doses import simulator_settings

            summary["low_dose"] = {"doses": list(config.doses), "simulated_on": "native CT, before preprocessing",
                                   **simulator_settings()}
        trainer.write_package(result, summary, conformal, profile, temperature)
        progress.done(model_dir=str(out.resolve()), best_epoch=result.best_epoch,
                      best_val_macro_auc=result.best_auc)
        if progress.mode != "json":
            print(f"wrote model package {out} (best epoch {result.best_epoch + 1}, "
                  f"validation macro AUC {result.best_auc:.3f})")
    dist_ctx.barrier()
    dist_ctx.close()
    return out


def build_targets(plan, records, fit_idx, cohort, cache_dir, device, rgd_map, progress):
    """The student's teacher targets the plan asks for (None without one): the oracle's computed, the teachers'
    read from (or written to) the teacher cache, cross-fitted ones then picked per case."""
    if plan is None:
        return None
    if plan.mode == "oracle":
        return oracle_targets(records, fit_idx)
    progress.emit("section", name="teacher cache")
    packages = [package for packages in plan.packages for package in packages]
    targets = load_or_build(cache_dir, [p.model for p in packages], [p.metadata["sha256"] for p in packages],
                            cohort, device, notify=lambda text: print(f"note: {text}", file=sys.stderr),
                            rgd_map=rgd_map)
    if plan.mode == "cross_fitted":
        targets = select_cross_fitted(targets, len(plan.kinds), plan.parts, len(cohort))
    for package_list in plan.packages:  # a student step never runs a teacher
        package_list.clear()
    return targets


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
