"""Can a network fit its training data? Train a stage on a handful of cases with the real training loop and
report the training loss and accuracy on those same cases.

A network that cannot memorise 8-12 cases is a bug (too high a learning rate, a head that cannot see the
tumour), not a budget problem; this check runs in the test suite and drives the learning-rate sweep
(experiments/lr_sweep.py).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reactkd.cohort.cache import CohortTensors
from reactkd.progress import Progress
from reactkd.training.config import TrainConfig
from reactkd.training.engine import Trainer
from reactkd.training.stages import make_stage


@dataclass
class FitReport:
    stage: str
    learning_rate: float
    steps: int
    first_loss: float  # mean training loss of the first epoch
    final_loss: float  # classification loss on the cases after training (eval mode, no dropout)
    accuracy: float  # on the same cases


def overfit(stage_name: str, cohort: CohortTensors, indices: list[int], config: TrainConfig,
            epochs: int, device: torch.device | str = "cpu") -> FitReport:
    """Train ``stage_name`` (student: classification only, no teachers) on ``indices`` and measure the fit."""
    device = torch.device(device)
    if stage_name == "student":  # fit and measure on what the student is judged on: CT alone
        cohort = ct_only_cohort(cohort)
    config = dataclasses.replace(config, epochs=epochs, alpha=0.0, lambda_graph=0.0, early_stopping=0,
                                 modality_dropout=0.0)
    torch.manual_seed(config.seed)
    stage = make_stage(stage_name, config)
    with tempfile.TemporaryDirectory(prefix="reactkd-overfit-") as folder:
        trainer = Trainer(stage, cohort, indices, indices, config, Path(folder), device, Progress("none"))
        result = trainer.run(resume=False)
    model = trainer.model.eval()
    index = torch.tensor(indices)
    batch = trainer.batch(index)
    images, available = stage.eval_inputs(batch)  # PET/CT for the SF teacher, full-dose CT for the others
    with torch.no_grad():
        logits = model(images, available, batch["region_labels"]).logits.float()
    labels = batch["labels"]
    final = float(stage.cls_loss(logits, labels))
    accuracy = float((logits.argmax(1) == labels).float().mean())
    return FitReport(stage_name, config.stage_learning_rate(stage_name), trainer.steps_per_epoch * epochs,
                     float(result.history[0]["train_cls"]), final, accuracy)


def ct_only_cohort(cohort: CohortTensors) -> CohortTensors:
    """The cohort with every PET channel removed (zeroed, flagged absent)."""
    images = cohort.images.clone()
    images[:, 1:] = 0
    available = cohort.available.clone()
    available[:, 1:] = False
    return dataclasses.replace(cohort, images=images, available=available)


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """``per_class`` case indices of every grade (seeded), sorted; cases labelled -1 are never drawn."""
    rng = np.random.default_rng(seed)
    grades = [grade for grade in np.unique(labels) if grade >= 0]
    picked = [rng.choice(np.flatnonzero(labels == grade), per_class, replace=False) for grade in grades]
    return sorted(int(i) for i in np.concatenate(picked))
