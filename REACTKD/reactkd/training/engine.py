"""The training loop shared by the three stages (teacher-sf, teacher-dose, student).

One epoch: an order from a generator seeded by (seed, epoch) (grade-balanced: every batch draws the grades
as evenly as the cohort allows), batches gathered from the cohort tensors (already on the GPU when they fit,
otherwise page-locked and copied asynchronously), the stage's inputs and loss, an optimizer step and a
learning-rate step (linear warm-up, then cosine decay, counted in optimiser steps); then the inner
validation macro AUC, the best weights kept, and an atomic checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reactkd import __version__
from reactkd.atomic import atomic_path
from reactkd.cohort.cache import TENSOR_FIELDS, CohortTensors
from reactkd.conformal import DEFAULT_LEVEL, calibrate
from reactkd.errors import ConfigError
from reactkd.models.base import pooled_features
from reactkd.ood import build_profile
from reactkd.package.model_package import save_package
from reactkd.progress import Progress
from reactkd.scores import macro_auc
from reactkd.temperature import choose_temperature, package_temperature, with_temperature
from reactkd.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from reactkd.training.config import TrainConfig, config_to_dict
from reactkd.training.distributed import DistContext
from reactkd.training.stages import Stage
from reactkd.vocabulary import CLASS_NAMES, INTENDED_USE

CHECKPOINT_DIR = "checkpoint"
BEST_FILE = "best.safetensors"


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_auc: float
    history: list[dict] = field(default_factory=list)
    train_seconds: float | None = None  # every epoch's, across resumes (None: resumed from an older checkpoint)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LambdaLR factor: linear warm-up over ``warmup_steps`` (capped at a fifth of the run, so short runs
    still spend most steps at full rate), then cosine decay to zero at ``total_steps``."""
    warmup = min(warmup_steps, total_steps // 5)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def epoch_order(labels: torch.Tensor, generator: torch.Generator, balanced: bool) -> torch.Tensor:
    """Positions into ``labels`` for one epoch. Balanced: each case gets a slot (rank in its shuffled class +
    uniform jitter) / class size, and sorting the slots interleaves the grades evenly through the epoch, so
    every batch sees each grade in proportion (a batch of 4 from a 3-grade cohort never holds one grade
    only). Otherwise a plain permutation."""
    n = len(labels)
    permutation = torch.randperm(n, generator=generator)
    if not balanced:
        return permutation
    shuffled = labels[permutation]
    counts = torch.bincount(shuffled)
    # Rank of every case within its class, in shuffled order, without a Python loop.
    one_hot = torch.nn.functional.one_hot(shuffled, len(counts))
    rank = (one_hot.cumsum(0) - 1).gather(1, shuffled[:, None]).squeeze(1)
    jitter = torch.rand(n, generator=generator)
    slot = (rank.double() + jitter.double()) / counts[shuffled].double()
    return permutation[torch.argsort(slot)]


class Trainer:
    """Runs one stage on a cohort split. The stage object supplies the model, inputs and loss."""

    def __init__(self, stage: Stage, cohort: CohortTensors, train_idx: list[int], val_idx: list[int],
                 config: TrainConfig, out_dir: Path, device: torch.device, progress: Progress,
                 dist_ctx: DistContext | None = None) -> None:
        self.stage, self.cohort, self.config, self.device = stage, cohort, config, device
        self.out_dir, self.progress = Path(out_dir), progress
        self.dist = dist_ctx or DistContext()
        self.train_idx = torch.tensor(stage.usable(cohort, train_idx), dtype=torch.long)
        self.val_idx = torch.tensor(stage.usable(cohort, val_idx), dtype=torch.long)
        if len(self.train_idx) == 0 or len(self.val_idx) == 0:
            raise ConfigError(f"stage {stage.name}: no usable training or validation cases in this fold")
        self.model = stage.model.to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.stage_learning_rate(stage.name),
                                           weight_decay=config.weight_decay)
        self.steps_per_epoch = -(-len(self.dist.shard(self.train_idx)) // config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, self.steps_per_epoch * config.epochs))
        self.train_model = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids,
                                                       find_unused_parameters=stage.unused_parameters)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.amp
                         else contextlib.nullcontext())

    # -- data -------------------------------------------------------------------------------------------
    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        source_device = self.cohort.images.device
        idx = indices.to(source_device)
        batch = {name: getattr(self.cohort, name).index_select(0, idx).to(self.device, non_blocking=True)
                 for name in TENSOR_FIELDS}
        if self.cohort.dose_ct is not None:
            batch["dose_ct"] = self.cohort.dose_ct.index_select(0, idx).to(self.device, non_blocking=True)
        batch["case_index"] = indices.to(self.device)
        return batch

    # -- loop ---------------------------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainResult:
        ckpt = self.out_dir / CHECKPOINT_DIR
        start_epoch, history, best_auc, best_epoch, seconds = 0, [], -math.inf, -1, 0.0
        if resume and has_checkpoint(ckpt):
            info = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler, self.run_description())
            start_epoch, history = info["epoch"] + 1, info["history"]
            best_auc, best_epoch, seconds = info["best_auc"], info["best_epoch"], info.get("train_seconds")
        elif has_checkpoint(ckpt) and self.dist.is_main:
            raise ConfigError(f"{self.out_dir} already holds a training run; pass --resume to continue it "
                              "or choose another --out")
        steps = self.steps_per_epoch
        total = steps * self.config.epochs
        self.progress.start(stage=self.stage.name, epochs=self.config.epochs, steps=steps,
                            n_train=len(self.train_idx), n_val=len(self.val_idx), device=str(self.device))
        for epoch in range(start_epoch, self.config.epochs):
            if self.config.early_stopping and best_epoch >= 0 and epoch - best_epoch > self.config.early_stopping:
                break
            started = time.monotonic()
            losses = self.train_epoch(epoch, steps, total)
            auc = self.validate()
            seconds = None if seconds is None else seconds + time.monotonic() - started
            improved = not math.isnan(auc) and auc > best_auc
            if improved:
                best_auc, best_epoch = auc, epoch
            history.append({"epoch": epoch, **losses, "val_macro_auc": auc})
            if self.dist.is_main:
                if improved or best_epoch < 0:
                    self._save_best()
                save_checkpoint(ckpt, self.model, self.optimizer, self.scheduler,
                                {"epoch": epoch, "history": history, "best_auc": best_auc,
                                 "best_epoch": best_epoch, "train_seconds": seconds, "run": self.run_description()})
            self.dist.barrier()
            self.progress.epoch_end(epoch, {**losses, "val_macro_auc": auc, "best_val_macro_auc": best_auc})
        return TrainResult(self.out_dir, best_epoch, best_auc, history, seconds)

    def run_description(self) -> dict:
        """What a resumed run must share with its checkpoint: stage, settings, cases (ids and grades, in fit and
        validation parts) and world size. Not file paths: a cohort moved to another disk still resumes."""
        order = torch.cat([self.train_idx, self.val_idx]).tolist()
        labels = self.cohort.labels.cpu()
        cases = [f"{self.cohort.case_ids[i]}:{int(labels[i])}" for i in order]
        digest = hashlib.sha256("\n".join([str(len(self.train_idx)), *cases]).encode()).hexdigest()
        # JSON round trip: the saved copy comes back with lists where the config holds tuples.
        return json.loads(json.dumps({"stage": self.stage.name, "config": config_to_dict(self.config),
                                      "cases": digest, "world_size": self.dist.world_size}, default=float))

    def train_epoch(self, epoch: int, steps: int, total: int) -> dict[str, float]:
        self.model.train()
        torch.manual_seed(self.config.seed * 7919 + epoch)  # dropout layers inside the networks
        cpu_gen = epoch_generator(self.config.seed, epoch, torch.device("cpu"))
        labels = self.cohort.labels[self.train_idx.to(self.cohort.labels.device)].cpu()
        order = self.train_idx[epoch_order(labels, cpu_gen, self.config.balanced_batches)]
        order = self.dist.shard(order)
        device_gen = epoch_generator(self.config.seed + self.dist.rank, epoch, self.device)
        sums: dict[str, float] = {}
        self.progress.epoch_begin(epoch, self.config.epochs, steps)
        for step in range(steps):
            batch = self.batch(order[step * self.config.batch_size:(step + 1) * self.config.batch_size])
            with self.autocast:
                terms = self.stage.loss(self.train_model, batch, device_gen, self.config)
            self.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.optimizer.step()
            self.scheduler.step()
            # One host sync per step (for logging), not one per loss term.
            numbers = torch.stack([v.detach().float() for v in terms.values()]).tolist()
            values = dict(zip(terms.keys(), numbers))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            self.progress.step(epoch, step, steps, values, epoch * steps + step + 1, total)
        return {f"train_{k}": v / steps for k, v in sums.items()}

    @torch.no_grad()
    def predict(self, indices: torch.Tensor, features: bool = False) -> np.ndarray:
        """Softmax probabilities of the trained model on the stage's validation inputs (with `features`: the
        pooled deepest features, ``models.base.pooled_features``, instead)."""
        self.model.eval()
        shard = self.dist.shard(indices)
        outputs = []
        for start in range(0, len(shard), self.config.batch_size):
            batch = self.batch(shard[start:start + self.config.batch_size])
            images, available = self.stage.eval_inputs(batch)
            with self.autocast:
                output = self.model(images, available, batch["region_labels"])
            outputs.append(pooled_features(output.features) if features else torch.softmax(output.logits.float(), dim=1))
        probs = self.dist.gather(torch.cat(outputs), len(indices))
        return probs.cpu().numpy()

    def validate(self) -> float:
        probs = self.predict(self.val_idx)
        labels = self.cohort.labels[self.val_idx.to(self.cohort.labels.device)].cpu().numpy()
        return macro_auc(labels, probs)

    def _save_best(self) -> None:
        folder = self.out_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / BEST_FILE) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp))

    def calibrations(self, level: float = DEFAULT_LEVEL) -> tuple[dict, dict]:
        """(temperature, conformal) blocks of the package, both from the best weights on the inner validation
        cases and the stage's validation inputs (the student: CT alone). The temperature is applied only when
        one fitted on other folds of those cases lowers NLL on the held-out fold (``reactkd.temperature``); the
        class-conditional split-conformal sets (``reactkd.conformal``) are calibrated on the probabilities
        after it. Those cases also chose the epoch: a small optimism, stated in the record. Every rank takes
        part (the predictions are gathered)."""
        self.model.load_state_dict(load_file(str(self.out_dir / CHECKPOINT_DIR / BEST_FILE)))
        probs = self.predict(self.val_idx)
        labels = self.cohort.labels[self.val_idx.to(self.cohort.labels.device)].cpu().numpy()
        temperature = choose_temperature(labels, probs)
        probs = with_temperature(probs, package_temperature({"temperature": temperature}))
        try:
            calibration = calibrate(labels, probs, level)
        except ConfigError as exc:  # a grade missing from a tiny validation split: the package has no sets
            return temperature, {"unavailable": str(exc)}
        return temperature, {**calibration.to_dict(), "notes": calibration.notes,
                             "calibrated_on": f"the inner validation split ({len(labels)} cases, which also chose "
                                              "the epoch), after the package's temperature"}

    def input_profile(self, fit_spacings_xyz) -> dict:
        """The input profile (``reactkd.ood``) of the best weights: the fit cases' spacings and pooled features,
        the out-of-distribution threshold from the inner validation cases. Every rank takes part."""
        self.model.load_state_dict(load_file(str(self.out_dir / CHECKPOINT_DIR / BEST_FILE)))
        fit, val = self.predict(self.train_idx, features=True), self.predict(self.val_idx, features=True)
        return build_profile(fit, val, fit_spacings_xyz).to_dict()

    def write_package(self, result: TrainResult, summary: dict, conformal: dict | None = None,
                      input_profile: dict | None = None, temperature: dict | None = None) -> Path:
        """Load the best weights and write the model package (model.safetensors + metadata.json) to out_dir."""
        state = load_file(str(self.out_dir / CHECKPOINT_DIR / BEST_FILE))
        self.model.load_state_dict(state)
        model = self.model
        preprocessing = self.config.preprocess_config().to_dict()
        metadata = {
            "name": f"{self.config.name or 'reactkd'}-{self.stage.name}",
            "description": self.config.description,
            "version": __version__,
            "stage": self.stage.name,
            "architecture": model.architecture,
            "architecture_args": model.config,
            "class_names": list(CLASS_NAMES),
            "input_modalities": list(model.input_modalities),
            "preprocessing": preprocessing,
            "graph": self.config.package_graph(),
            "training": {**summary, "best_epoch": result.best_epoch, "best_val_macro_auc": result.best_auc,
                         "epochs_run": len(result.history), "history": result.history,
                         "config": config_to_dict(self.config)},
            **({"conformal": conformal} if conformal is not None else {}),
            **({"input_profile": input_profile} if input_profile is not None else {}),
            **({"temperature": temperature} if temperature is not None else {}),
            "intended_use": INTENDED_USE,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        json.dumps(metadata, allow_nan=True)
        return save_package(model, self.out_dir, metadata)
