"""The three training stages: which cases they use, what the network sees, and their loss.

- teacher-sf: structure-function teacher on PET/CT (cases with at least one PET), classification loss.
- teacher-dose: dose-aware teacher on CT degraded by the low-dose simulator at one of the configured doses,
  drawn per sample, classification loss. The degraded CTs were simulated on each native CT before
  preprocessing, once per case and dose (`cohort.doses`, the function `reactkd evaluate --doses` calls).
- student: CT student with modality dropout (at least ``ct_only_share`` of its samples CT alone); loss =
  (1 - alpha) L_cls + alpha L_KD + lambda_graph L_RGD against the frozen teachers ``training.targets`` plans
  (cross-fitted by default), whose outputs on the un-dropped inputs come from the teacher cache.
"""

from __future__ import annotations

import torch

from reactkd.cohort.cache import CohortTensors
from reactkd.errors import ConfigError
from reactkd.graph import node_features, soft_region_masks
from reactkd.losses import classification_loss, kd_loss, rgd_loss, total_loss
from reactkd.models import apply_modality_dropout, build_model, graph_map
from reactkd.training.config import TrainConfig
from reactkd.training.teacher_cache import TeacherTargets
from reactkd.vocabulary import STUDENT, TEACHER_DOSE, TEACHER_SF

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
        cls = self.cls_loss(model(images, available, batch["region_labels"]).logits, batch["labels"])
        return {"cls": cls, "total": cls}


class StructureFunctionStage(Stage):
    name = TEACHER_SF
    unused_parameters = True  # a batch without acetate PET leaves the ACT branch unused

    def usable(self, cohort, indices):
        has_pet = cohort.available[:, 1:].any(dim=1)
        return [i for i in indices if bool(has_pet[i])]


class DoseStage(Stage):
    name = TEACHER_DOSE

    def degraded_inputs(self, batch, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """CT alone at one of the configured doses per sample, from the cohort's cached degraded CTs."""
        if "dose_ct" not in batch:
            raise ConfigError("the dose teacher needs the cohort's degraded CTs (cohort.doses.load_dose_cache)")
        dose_ct = batch["dose_ct"]  # (B, n_doses, D, H, W)
        pick = torch.randint(dose_ct.shape[1], (dose_ct.shape[0],), generator=generator,
                             device=generator.device).to(dose_ct.device)
        images = torch.zeros_like(batch["images"])
        images[:, 0] = dose_ct[torch.arange(dose_ct.shape[0], device=dose_ct.device), pick].to(images.dtype)
        available = CT_ONLY.to(images.device).expand(images.shape[0], 3).clone()
        return images, available

    def eval_inputs(self, batch):
        return ct_only(batch)

    def loss(self, model, batch, generator, config):
        images, available = self.degraded_inputs(batch, generator)
        cls = self.cls_loss(model(images, available, batch["region_labels"]).logits, batch["labels"])
        return {"cls": cls, "total": cls}


class StudentStage(Stage):
    """The student against frozen teachers whose outputs come from the teacher cache (``targets``, indexed
    by ``batch["case_index"]``): a step runs only the student. Without teachers (alpha = 0 and
    lambda_graph = 0) the loss is the classification term alone."""

    name = STUDENT

    def __init__(self, model, config, targets: TeacherTargets | None = None,
                 weights: list[float] | None = None) -> None:
        super().__init__(model, config)
        self.targets = targets
        self.weights = list(weights) if weights is not None else self.default_weights(config, targets)
        # Samples the student saw with CT alone, and all of them (the CT-only exposure the package records),
        # counted on the training device: no host sync per step.
        self.exposure = torch.zeros(2, dtype=torch.long)

    @staticmethod
    def default_weights(config: TrainConfig, targets: TeacherTargets | None) -> list[float]:
        """One weight per teacher in ``targets``: the config's, or 1 for the oracle (targets without graph
        nodes: one 'teacher' whatever teacher_weights says about the networks it replaces)."""
        if targets is None:
            return []
        return list(config.teacher_weights[:targets.logits.shape[1]]) if targets.nodes else [1.0]

    def ct_only_exposure(self) -> float | None:
        """Realised share of training samples the student saw with CT alone (1 for a CT-only network)."""
        if list(self.model.input_modalities) == ["ct"]:
            return 1.0
        ct_alone, seen = self.exposure.tolist()
        return ct_alone / seen if seen else None

    def to(self, device: torch.device) -> StudentStage:
        self.targets = self.targets.to(device) if self.targets is not None else None
        return self

    def eval_inputs(self, batch):
        return ct_only(batch)  # the deployment case: CT alone

    def loss(self, model, batch, generator, config):
        images, available = batch["images"], batch["available"]
        student_images, student_available = apply_modality_dropout(images, available, config.modality_dropout,
                                                                   generator, config.ct_only_share)
        ct_alone = ~student_available[:, 1:].any(dim=1)
        self.exposure = self.exposure.to(ct_alone.device) + torch.stack([ct_alone.sum(), ct_alone.new_tensor(
            len(ct_alone), dtype=torch.long)])
        out = model(student_images, student_available, batch["region_labels"])
        cls = self.cls_loss(out.logits, batch["labels"])
        if self.targets is None:
            return {"cls": cls, "total": cls}
        case = batch["case_index"].to(self.targets.logits.device)
        teacher_logits = self.targets.logits[case].transpose(0, 1).to(images.device)  # (T, B, classes)
        ok = self.targets.usable[case].transpose(0, 1).to(images.device)
        weights = torch.tensor(self.weights, device=images.device)
        zero = cls.new_zeros(())
        kd = kd_loss(out.logits.float(), teacher_logits, ok, weights, config.temperature) if config.alpha > 0 \
            else zero
        rgd = zero
        if config.lambda_graph > 0:
            n_nodes = int(batch["n_nodes"].max())
            node_mask = torch.arange(n_nodes, device=images.device)[None, :] < batch["n_nodes"][:, None]
            feature_map = graph_map(out, config.rgd_map)
            student_nodes = node_features(feature_map.float(),
                                          soft_region_masks(batch["node_index"], n_nodes, feature_map.shape[2:]))
            teacher_nodes = [nodes[case, :n_nodes].to(images.device) for nodes in self.targets.nodes]
            rgd = rgd_loss(student_nodes, teacher_nodes, node_mask, ok, weights, epsilon=config.gw_epsilon,
                           edge_weight=config.edge_weight, kind=config.rgd_kind)
        terms = {"cls": cls, "kd": kd, "rgd": rgd}
        return {**terms, "total": total_loss(terms, config.loss_weights())}


def make_stage(name: str, config: TrainConfig, targets: TeacherTargets | None = None,
               weights: list[float] | None = None) -> Stage:
    """Build the stage and its fresh network from the config (every network gets ``config.head``); the
    student's ``targets`` come with one weight per teacher in them."""
    if name == TEACHER_SF:
        return StructureFunctionStage(build_model("sf_teacher", head=config.head, **config.teacher), config)
    if name == TEACHER_DOSE:
        return DoseStage(build_model("dose_teacher", head=config.head, **config.teacher), config)
    return StudentStage(build_model("student", head=config.head, **config.student), config, targets, weights)
