"""The three training stages: which cases they use, what the network sees, and their loss.

- teacher-sf: structure-function teacher on PET/CT (cases with at least one PET), classification loss.
- teacher-dose: dose-aware teacher on CT degraded on the fly by the low-dose simulator at a random dose
  per sample, classification loss.
- student: CT student with modality dropout; loss = (1 - alpha) L_cls + alpha L_KD + lambda_g L_RGD against
  both frozen teachers, which see the un-dropped inputs.
"""

from __future__ import annotations

import torch

from ..graph import node_features, soft_region_masks
from ..ldct import degrade_batch
from ..losses import classification_loss, kd_loss, rgd_loss, total_loss
from ..models import apply_modality_dropout, build_model
from .config import TrainConfig
from .data import CohortTensors

CT_ONLY = torch.tensor([True, False, False])


def ct_only(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    images = batch["images"].clone()
    images[:, 1:] = 0
    available = CT_ONLY.to(images.device).expand(images.shape[0], 3).clone()
    return images, available


class Stage:
    name = ""
    unused_parameters = False

    def __init__(self, model: torch.nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.config = config

    def usable(self, cohort: CohortTensors, indices: list[int]) -> list[int]:
        return list(indices)

    def eval_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["images"], batch["available"]

    def cls_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.config.class_weights is not None:
            weight = torch.tensor(self.config.class_weights, device=logits.device, dtype=torch.float32)
        return classification_loss(self.config.loss, logits.float(), labels, gamma=self.config.focal_gamma,
                                   weight=weight)

    def loss(self, model, batch, generator, config) -> dict[str, torch.Tensor]:
        images, available = self.eval_inputs(batch)
        cls = self.cls_loss(model(images, available).logits, batch["labels"])
        return {"cls": cls, "total": cls}


class StructureFunctionStage(Stage):
    name = "teacher-sf"
    unused_parameters = True  # a batch without acetate PET leaves the ACT branch unused

    def usable(self, cohort, indices):
        has_pet = cohort.available[:, 1:].any(dim=1)
        return [i for i in indices if bool(has_pet[i])]


class DoseStage(Stage):
    name = "teacher-dose"

    def degraded_inputs(self, batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        doses_choice = torch.tensor(self.config.doses, device=batch["ct_hu"].device)
        pick = torch.randint(len(self.config.doses), (batch["ct_hu"].shape[0],), generator=generator,
                             device=generator.device).to(doses_choice.device)
        ct_hu = degrade_batch(batch["ct_hu"], doses_choice[pick], batch["spacing"][:, :2], generator)
        low, high = self.config.preprocess_config().ct_window
        images = torch.zeros_like(batch["images"])
        images[:, 0] = ((ct_hu.clamp(low, high) - low) / (high - low)).to(images.dtype)
        available = CT_ONLY.to(images.device).expand(images.shape[0], 3).clone()
        return images, available

    def eval_inputs(self, batch):
        return ct_only(batch)

    def loss(self, model, batch, generator, config):
        images, available = self.degraded_inputs(batch, generator)
        cls = self.cls_loss(model(images, available).logits, batch["labels"])
        return {"cls": cls, "total": cls}


class StudentStage(Stage):
    name = "student"

    def __init__(self, model, config, teachers: list[torch.nn.Module]) -> None:
        super().__init__(model, config)
        self.teachers = teachers

    def to(self, device: torch.device) -> StudentStage:
        self.teachers = [t.to(device) for t in self.teachers]
        return self

    def eval_inputs(self, batch):
        return ct_only(batch)  # the deployment case: CT alone

    def loss(self, model, batch, generator, config):
        images, available = batch["images"], batch["available"]
        student_images, student_available = apply_modality_dropout(images, available, config.modality_dropout,
                                                                   generator)
        out = model(student_images, student_available)
        n_nodes = int(batch["n_nodes"].max())
        node_mask = torch.arange(n_nodes, device=images.device)[None, :] < batch["n_nodes"][:, None]
        student_nodes = node_features(out.features.float(),
                                      soft_region_masks(batch["node_index"], n_nodes, out.features.shape[2:]))
        teacher_logits, teacher_nodes, teacher_ok = [], [], []
        with torch.no_grad():
            for teacher in self.teachers:
                t_out = teacher(images, available)
                teacher_logits.append(t_out.logits.float())
                teacher_nodes.append(node_features(
                    t_out.features.float(), soft_region_masks(batch["node_index"], n_nodes, t_out.features.shape[2:])))
                teacher_ok.append(teacher.teacher_available(available))
        ok = torch.stack(teacher_ok)
        weights = torch.tensor(config.teacher_weights[:len(self.teachers)], device=images.device)
        cls = self.cls_loss(out.logits, batch["labels"])
        kd = kd_loss(out.logits.float(), torch.stack(teacher_logits), ok, weights, config.temperature)
        rgd = rgd_loss(student_nodes, teacher_nodes, node_mask, ok, weights, epsilon=config.graph.gw_epsilon,
                       edge_weight=config.graph.edge_weight)
        total = total_loss(cls, kd, rgd, alpha=config.alpha, lambda_g=config.lambda_graph)
        return {"cls": cls, "kd": kd, "rgd": rgd, "total": total}


def make_stage(name: str, config: TrainConfig, teachers: list[torch.nn.Module] | None = None) -> Stage:
    """Build the stage and its fresh network from the config."""
    if name == "teacher-sf":
        return StructureFunctionStage(build_model("sf_teacher", **config.teacher), config)
    if name == "teacher-dose":
        return DoseStage(build_model("dose_teacher", **config.teacher), config)
    return StudentStage(build_model("student", **config.student), config, teachers or [])
