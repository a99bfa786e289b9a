"""Training losses: classification (focal / cross-entropy), multi-teacher logit distillation (KD) and region
graph distillation (RGD: Gromov-Wasserstein between intra-graph distance matrices plus an edge term).

All losses are batched torch code (CPU or GPU); none loops over samples in Python. ``LOSSES`` names them
(the training config's ``loss:`` picks the classification one) and ``total_loss`` sums the terms by the
weights the config gives (``TrainConfig.loss_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ot
import torch
import torch.nn.functional as F

from reactkd.devices import single_cpu_thread
from reactkd.errors import ConfigError
from reactkd.graph.pooling import edge_weights

#: Mass given to padded nodes in the GW marginals. Zero mass makes POT's log-domain solver produce NaN
#: (log 0 - logsumexp(-inf) after the first outer step); 1e-20 is invisible next to real masses (>= 1/64) and
#: the plan's padded rows/columns are zeroed before the value is computed, so padding has no effect.
PAD_MASS = 1e-20

#: Classification losses (the training config's ``loss:``), all in ``LOSSES``.
CLASSIFICATION_LOSSES = ("focal", "ce")
#: Region graph distillation terms: the paper's Gromov-Wasserstein, or the relational-distance loss it
#: reduces to under the known node correspondence (a study arm).
RGD_KINDS = ("gw", "relational")
#: Inclusive bounds of the region graph distillation settings (the training config's ``gw_epsilon`` and
#: ``edge_weight``, which a package's metadata also records beside its graph settings).
RGD_LIMITS: dict[str, tuple[float, float]] = {"gw_epsilon": (1e-4, 10.0), "edge_weight": (0.0, 100.0)}


def rgd_problems(values: Mapping, prefix: str = "") -> list[str]:
    """What is wrong with region graph distillation settings (``RGD_LIMITS``), one message per problem.

    Example:
        >>> rgd_problems({"gw_epsilon": 0.05, "edge_weight": -1})
        ['edge_weight must be a number in [0, 100], got -1']
    """
    problems = []
    for key, value in values.items():
        low, high = RGD_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            problems.append(f"{prefix}{key} must be a number in [{low:g}, {high:g}], got {str(value)[:40]}")
    return problems


# --------------------------------------------------------------------------- classification
def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class focal loss, mean over the batch: -w_y (1 - p_y)^gamma log p_y.

    With class weights the mean is normalised by the summed weights of the targets, as
    ``F.cross_entropy`` does, so ``gamma=0`` gives exactly the (weighted) cross-entropy.

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1])
        >>> round(focal_loss(logits, target).item(), 4)
        0.0516
        >>> torch.equal(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
        True
    """
    log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p) for confident samples.
    loss = -((-torch.expm1(log_p)).clamp_min(0.0) ** gamma) * log_p
    if weight is None:
        return loss.mean()
    w = weight.to(logits.dtype)[target]
    return (loss * w).sum() / w.sum()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  gamma: float | None = None) -> torch.Tensor:
    """(Weighted) cross-entropy, mean over the batch. ``gamma`` is accepted (and ignored) so that every
    classification loss of ``LOSSES`` takes the same arguments."""
    return F.cross_entropy(logits, target, weight=weight)


def classification_loss(kind: str, logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """The classification loss ``kind`` of ``LOSSES``: "focal" (with ``gamma``) or "ce".

    Example:
        >>> logits, target = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1])
        >>> round(classification_loss("ce", logits, target).item(), 4)
        0.3606
        >>> classification_loss("hinge", logits, target)
        Traceback (most recent call last):
        ...
        reactkd.errors.ConfigError: unknown classification loss 'hinge' (use 'focal' or 'ce')
    """
    if kind not in CLASSIFICATION_LOSSES:
        raise ConfigError(f"unknown classification loss {kind!r} (use 'focal' or 'ce')")
    return LOSSES[kind](logits, target, gamma=gamma, weight=weight)


# --------------------------------------------------------------------------- teacher mixing
def _teacher_mix_weights(available: torch.Tensor | None, weights: torch.Tensor | Sequence[float] | None,
                         n_teachers: int, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, B) per-sample teacher weights renormalised over the available teachers, and (B,) has-a-teacher."""
    if available is None:
        available = torch.ones(n_teachers, batch, dtype=torch.bool, device=device)
    available = torch.as_tensor(available, device=device).to(torch.bool)
    if available.shape != (n_teachers, batch):
        raise ValueError(f"teacher_available must be (T, B) = ({n_teachers}, {batch}), got {tuple(available.shape)}")
    w = torch.ones(n_teachers, device=device, dtype=dtype) if weights is None else \
        torch.as_tensor(weights, device=device, dtype=dtype)
    if w.shape != (n_teachers,) or bool((w < 0).any()):
        raise ValueError(f"teacher_weights must be {n_teachers} non-negative numbers, got {w.tolist()}")
    raw = w[:, None] * available.to(dtype)
    total = raw.sum(dim=0)
    has_teacher = total > 0
    return raw / total.clamp_min(torch.finfo(dtype).tiny), has_teacher


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of values where keep; 0 (still in the autograd graph) when nothing is kept. No host sync."""
    keep = keep.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp_min(1.0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            teacher_available: torch.Tensor | None = None,
            teacher_weights: torch.Tensor | Sequence[float] | None = None,
            temperature: float = 2.0) -> torch.Tensor:
    """T^2 * KL(p_teacher_mix || p_student) at temperature T, averaged over samples that have a teacher.

    ``teacher_logits`` (T, B, K) (or (B, K) for one teacher); ``teacher_available`` (T, B) bool. The mix is
    the per-sample weighted average of the available teachers' softened probabilities (weights renormalised
    per sample). Teachers are frozen: their logits are detached. Zero when no sample has a teacher.

    Example:
        >>> student = torch.tensor([[1.0, 0.0, 0.0]])
        >>> teachers = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])  # (T=2, B=1, K=3)
        >>> round(kd_loss(student, teachers).item(), 4)  # against the even mix of both teachers
        0.0898
        >>> round(kd_loss(student, teachers, teacher_weights=[1.0, 0.0]).item(), 4)  # the first alone: same logits
        0.0
    """
    if teacher_logits.ndim == 2:
        teacher_logits = teacher_logits[None]
    n_teachers, batch, _ = teacher_logits.shape
    if student_logits.shape != teacher_logits.shape[1:]:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teachers {tuple(teacher_logits.shape)}")
    dtype = student_logits.dtype
    mix_w, has_teacher = _teacher_mix_weights(teacher_available, teacher_weights, n_teachers, batch,
                                              student_logits.device, dtype)
    p_teachers = F.softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    p_mix = (mix_w[..., None] * p_teachers).sum(dim=0)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (torch.xlogy(p_mix, p_mix) - p_mix * log_p_student).sum(dim=-1)
    return temperature ** 2 * _mean_over(kl, has_teacher)


# --------------------------------------------------------------------------- region graph distillation
@dataclass(frozen=True)
class GWOptions:
    """Settings of POT's batched proximal GW solver (``ot.batch.solve_gromov_batch``)."""

    # Defaults chosen on batches of 16-24-node graphs (benchmarks/bench_rgd.py data): smaller epsilon makes the
    # inner Sinkhorn steps too sharp to converge in budget (worse plans after rounding), and (20, 10)
    # iterations reach within ~2 % of the value of (30, 20) at a third of the cost.
    epsilon: float = 0.05  # proximal (KL) step weight, relative to distances normalised to mean 1
    max_iter: int = 20
    tol: float = 1e-5
    max_iter_inner: int = 10
    tol_inner: float = 1e-5


def graph_distances(nodes: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """Intra-graph Euclidean distances (B, N, C) -> (B, N, N), divided by their mean over real node pairs.

    The normalisation makes the matrix scale-free, so student and teacher graphs compare although their
    feature widths and magnitudes differ. Euclidean rather than cosine distance so that the GW term carries
    information the cosine edge term does not. Padded rows/columns are zero.
    """
    diff = nodes[:, :, None, :] - nodes[:, None, :, :]
    squared = (diff * diff).sum(dim=-1)
    n = nodes.shape[1]
    pairs = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=nodes.device)
    tiny = torch.finfo(nodes.dtype).tiny
    # sqrt of a clamped value: finite gradient when two nodes coincide; the diagonal is zeroed by the mask.
    dist = squared.clamp_min(tiny).sqrt() * pairs.to(nodes.dtype)
    count = pairs.sum(dim=(1, 2)).clamp_min(1).to(nodes.dtype)
    scale = dist.sum(dim=(1, 2)) / count
    return dist / scale.clamp_min(1e-12)[:, None, None]


def _round_to_marginals(plan: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Make a near-feasible plan exactly feasible (both marginals = mass): Altschuler, Weed & Rigollet 2017,
    Algorithm 2. The solver's inner Sinkhorn loop stops after a few iterations, so its plan can miss the
    marginals by a few per cent; only an exactly feasible plan gives a valid GW value (an upper bound of GW).
    """
    tiny = torch.finfo(plan.dtype).tiny
    plan = plan * (mass / plan.sum(dim=2).clamp_min(tiny)).clamp(max=1.0)[:, :, None]
    plan = plan * (mass / plan.sum(dim=1).clamp_min(tiny)).clamp(max=1.0)[:, None, :]
    missing_rows, missing_cols = mass - plan.sum(dim=2), mass - plan.sum(dim=1)
    total = missing_rows.sum(dim=1).clamp_min(tiny)[:, None, None]
    return plan + missing_rows[:, :, None] * missing_cols[:, None, :] / total


def gromov_wasserstein_batch(dist_a: torch.Tensor, dist_b: torch.Tensor, node_mask: torch.Tensor,
                             options: GWOptions = GWOptions()) -> tuple[torch.Tensor, torch.Tensor]:
    """Gromov-Wasserstein discrepancy of each pair of graphs on the same padded node set: (B,), plan (B, N, N).

    Uniform masses over real nodes. Solver: ``ot.batch.solve_gromov_batch``, a proximal-point (mirror descent)
    method on the *unregularised* GW objective: epsilon is a step size, not an entropic bias, so the value
    below is the exact quadratic GW loss sum T_ik T_jl (A_ij - B_kl)^2 of a feasible plan (the solver's plan
    is rounded onto the marginals first): an upper bound of GW, never negative.

    Two feasible plans are evaluated and the lower value is kept: the solver's plan (from the standard
    product initialisation) and the identity coupling, valid because both graphs are built on the same
    regions. GW is a minimum over plans, so the better of two candidates is the tighter estimate; it makes
    identical graphs give exactly 0 (the identity is then optimal) and, on real features, the node
    correspondence is often a better plan than the local optimum the solver reaches from the product plan.

    Gradient mode: envelope theorem. The plan is solved without autograd and held fixed, and the value is
    differentiated through the distance matrices only. At an optimal plan the derivative of the plan does
    not change the value to first order (Danskin), so this is the gradient of the GW discrepancy itself (and,
    for a plan short of optimal, the exact gradient of the upper bound that plan gives); it costs one
    evaluation, whereas autodiff through the 20 x 10 solver iterations would keep every iterate in memory and
    differentiate the truncation of the iterations rather than the discrepancy. Checked against finite
    differences in Testing/test_losses.py.
    """
    work = torch.promote_types(dist_a.dtype, torch.float32)  # the tiny pad mass needs at least float32
    a_dist, b_dist = dist_a.to(work), dist_b.to(work)
    real = node_mask.to(work)
    mass = torch.where(node_mask, 1.0 / real.sum(dim=1, keepdim=True).clamp_min(1.0),
                       torch.full_like(real, PAD_MASS))
    pair_mask = real[:, :, None] * real[:, None, :]
    with torch.no_grad(), single_cpu_thread(a_dist.device):
        solved = ot.batch.solve_gromov_batch(
            a_dist.detach(), b_dist.detach(), reg=options.epsilon, a=mass, b=mass, loss="sqeuclidean",
            symmetric=True, max_iter=options.max_iter, tol=options.tol, max_iter_inner=options.max_iter_inner,
            tol_inner=options.tol_inner, grad="detach")
        real_mass = mass * real
        solver_plan = _round_to_marginals(torch.nan_to_num(solved.plan) * pair_mask, real_mass)
        identity_plan = torch.diag_embed(real_mass)
    plans = torch.cat([solver_plan, identity_plan])
    with single_cpu_thread(a_dist.device):
        values = ot.batch.loss_quadratic_batch(
            torch.cat([mass, mass]), torch.cat([mass, mass]), torch.cat([a_dist, a_dist]),
            torch.cat([b_dist, b_dist]), plans, loss="sqeuclidean", symmetric=True, recompute_const=True)
    values = values.view(2, -1)
    best = values.argmin(dim=0)
    batch = torch.arange(values.shape[1], device=values.device)
    value = values[best, batch].clamp_min(0.0)  # the closed form can round to -1e-9; GW itself is >= 0
    plan = plans.view(2, *solver_plan.shape)[best, batch]
    return value.to(dist_a.dtype), plan


def edge_mse(sim_a: torch.Tensor, sim_b: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two (B, N, N) edge-weight matrices over real off-diagonal pairs: (B,)."""
    n = sim_a.shape[1]
    pairs = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=sim_a.device)
    squared = (sim_a - sim_b) ** 2 * pairs.to(sim_a.dtype)
    return squared.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp_min(1).to(sim_a.dtype)


def rgd_per_teacher(student_nodes: torch.Tensor, teacher_nodes: Sequence[torch.Tensor], node_mask: torch.Tensor,
                    options: GWOptions = GWOptions(), relational: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GW values (or, ``relational``, distance-matrix MSEs) and edge MSEs, each (T, B), of the student graph
    against every teacher graph.

    All teachers go through one batched solver call (T * B problems); widths may differ per teacher.
    """
    n_teachers = len(teacher_nodes)
    student_dist = graph_distances(student_nodes, node_mask)
    student_sim = edge_weights(student_nodes, node_mask)
    teacher_dist = torch.cat([graph_distances(t.to(student_nodes.dtype), node_mask) for t in teacher_nodes])
    teacher_sim = torch.cat([edge_weights(t.to(student_nodes.dtype), node_mask) for t in teacher_nodes])
    masks = node_mask.repeat(n_teachers, 1)
    if relational:
        gw = edge_mse(student_dist.repeat(n_teachers, 1, 1), teacher_dist, masks)
    else:
        gw, _ = gromov_wasserstein_batch(student_dist.repeat(n_teachers, 1, 1), teacher_dist, masks, options)
    edges = edge_mse(student_sim.repeat(n_teachers, 1, 1), teacher_sim, masks)
    batch = student_nodes.shape[0]
    return gw.view(n_teachers, batch), edges.view(n_teachers, batch)


def rgd_loss(student_nodes: torch.Tensor, teacher_nodes: torch.Tensor | Sequence[torch.Tensor],
             node_mask: torch.Tensor, teacher_available: torch.Tensor | None = None,
             teacher_weights: torch.Tensor | Sequence[float] | None = None, epsilon: float = 0.05,
             edge_weight: float = 1.0, gw_weight: float = 1.0, options: GWOptions | None = None,
             kind: str = "gw") -> torch.Tensor:
    """Region graph distillation: gw_weight * GW(student, teacher) + edge_weight * edge MSE, mixed over teachers.

    ``kind="relational"`` replaces the GW term by the mean squared difference of the two normalised distance
    matrices under the known node correspondence (the identity plan GW falls back on; no solver): the
    relational-distance loss GW reduces to when both graphs are built on the same regions.

    ``student_nodes`` (B, N, Cs); ``teacher_nodes`` (B, N, Ct) or a list of them (widths may differ);
    ``node_mask`` (B, N) marks real nodes. Per sample, the available teachers' terms are averaged with
    ``teacher_weights`` renormalised (like ``kd_loss``); the result is the mean over samples that have a
    teacher (0 if none). Teacher features are detached (frozen teachers). Identical graphs give 0.

    Example:
        >>> nodes = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]])  # one graph of 3 nodes, 2 features
        >>> node_mask = torch.ones(1, 3, dtype=torch.bool)
        >>> rgd_loss(nodes, nodes, node_mask).item()
        0.0
        >>> bool(rgd_loss(nodes, nodes.flip(1) * torch.tensor([1.0, 2.0]), node_mask) > 0)
        True
    """
    teachers = [teacher_nodes] if isinstance(teacher_nodes, torch.Tensor) else list(teacher_nodes)
    for t in teachers:
        if t.shape[:2] != student_nodes.shape[:2]:
            raise ValueError(f"teacher nodes {tuple(t.shape)} do not match student nodes {tuple(student_nodes.shape)}")
    if kind not in RGD_KINDS:
        raise ValueError(f"RGD kind must be one of {', '.join(RGD_KINDS)}, got {kind!r}")
    options = options or GWOptions(epsilon=epsilon)
    gw, edges = rgd_per_teacher(student_nodes, [t.detach() for t in teachers], node_mask, options,
                                relational=kind == "relational")
    per_teacher = gw_weight * gw + edge_weight * edges
    mix_w, has_teacher = _teacher_mix_weights(teacher_available, teacher_weights, len(teachers),
                                              student_nodes.shape[0], student_nodes.device, per_teacher.dtype)
    return _mean_over((mix_w * per_teacher).sum(dim=0), has_teacher)


# --------------------------------------------------------------------------- registry and total
#: Loss functions by the name a config gives them: the classification losses (``loss: focal | ce``) and
#: the student's distillation terms.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"focal": focal_loss, "ce": cross_entropy, "kd": kd_loss,
                                                  "rgd": rgd_loss}


def total_loss(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Sum of weight * term over the terms ``weights`` names, in its order (left to right, so the float
    result is that of the written-out sum); for the student ``TrainConfig.loss_weights()``:
    (1 - alpha) * cls + alpha * kd + lambda_graph * rgd.

    Example:
        >>> terms = {"cls": torch.tensor(1.0), "kd": torch.tensor(2.0), "rgd": torch.tensor(4.0)}
        >>> total_loss(terms, {"cls": 0.3, "kd": 0.7, "rgd": 1.0})
        tensor(5.7000)
    """
    if not weights:
        raise ValueError("total_loss needs at least one weighted term")
    missing = [name for name in weights if name not in terms]
    if missing:
        raise ValueError(f"total_loss: no value for the loss term(s) {', '.join(missing)} (got {', '.join(terms)})")
    total = None
    for name, weight in weights.items():
        weighted = weight * terms[name]
        total = weighted if total is None else total + weighted
    return total
