"""Losses: classification, multi-teacher KD, region graph distillation (GW + edges), total."""

import math
import warnings

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from reactkd.errors import ConfigError
from reactkd.graph import node_features, soft_region_masks
from reactkd.losses import (
    LOSSES,
    GWOptions,
    classification_loss,
    cross_entropy,
    focal_loss,
    graph_distances,
    gromov_wasserstein_batch,
    kd_loss,
    rgd_loss,
    total_loss,
)
from reactkd.training.config import load_config

DEVICES_TO_COMPARE = ("cpu", "cuda")
TIGHT = GWOptions(epsilon=0.05, max_iter=300, tol=1e-10, max_iter_inner=300, tol_inner=1e-11)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- classification
def test_focal_reduces_to_cross_entropy_and_down_weights_easy_samples():
    logits = torch.randn(6, 3, generator=gen(0))
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, weight=weight),
                               F.cross_entropy(logits, target, weight=weight))
    assert focal_loss(logits, target, gamma=2.0) < F.cross_entropy(logits, target)
    confident = torch.tensor([[6.0, 0.0, 0.0]], dtype=torch.float64)
    ratio = focal_loss(confident, torch.tensor([0])) / F.cross_entropy(confident, torch.tensor([0]))
    p = math.exp(6) / (math.exp(6) + 2)
    assert ratio.item() == pytest.approx((1 - p) ** 2, rel=1e-5)
    torch.testing.assert_close(classification_loss("ce", logits, target), F.cross_entropy(logits, target))
    with pytest.raises(ConfigError):
        classification_loss("hinge", logits, target)


# ----------------------------------------------------------------------------- KD
def softmax_np(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_kd_matches_closed_form_with_weights_and_exclusion():
    student = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teachers = np.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], [[0.0, 0.0, 4.0], [1.0, 1.0, 1.0]]])
    available = np.array([[True, False], [True, True]])  # teacher 0 lacks its modality for sample 1
    weights = np.array([3.0, 1.0])
    temperature = 2.0
    expected = []
    for b in range(2):
        w = weights * available[:, b]
        w = w / w.sum()
        mix = sum(w[t] * softmax_np(teachers[t, b] / temperature) for t in range(2))
        q = softmax_np(student[b] / temperature)
        expected.append(temperature ** 2 * np.sum(mix * np.log(mix / q)))
    value = kd_loss(torch.tensor(student), torch.tensor(teachers), torch.tensor(available),
                    torch.tensor(weights), temperature=temperature)
    assert value.item() == pytest.approx(np.mean(expected), rel=1e-10)
    # The excluded teacher's logits do not matter.
    changed = teachers.copy()
    changed[0, 1] = [9.0, -9.0, 0.0]
    again = kd_loss(torch.tensor(student), torch.tensor(changed), torch.tensor(available), torch.tensor(weights),
                    temperature=temperature)
    assert again.item() == pytest.approx(value.item(), rel=1e-12)


def test_kd_zero_for_equal_logits_and_without_teachers():
    student = torch.randn(4, 3, generator=gen(1), requires_grad=True)
    teachers = student.detach()[None].repeat(2, 1, 1)
    assert kd_loss(student, teachers).abs().item() < 1e-6
    none = torch.zeros(2, 4, dtype=torch.bool)
    value = kd_loss(student, teachers + 1.0 * torch.randn(2, 4, 3, generator=gen(2)), none)
    assert value.item() == 0.0
    value.backward()  # still part of the graph
    only_sample_2 = none.clone()
    only_sample_2[1, 2] = True
    mixed = teachers.clone()
    mixed[1, 2] = torch.tensor([5.0, 0.0, 0.0])
    single = kd_loss(student[2:3], mixed[1:2, 2:3])
    assert kd_loss(student, mixed, only_sample_2).item() == pytest.approx(single.item(), rel=1e-6)


# ----------------------------------------------------------------------------- GW / RGD
def random_graph(batch, nodes, width, seed, dtype=torch.float64):
    return torch.randn(batch, nodes, width, generator=gen(seed), dtype=dtype)


def test_gw_zero_for_identical_graphs_and_rgd_zero():
    feats = random_graph(3, 12, 16, seed=3, dtype=torch.float32)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 9:] = False
    dist = graph_distances(feats, mask)
    value, plan = gromov_wasserstein_batch(dist, dist.clone(), mask)
    assert value.abs().max().item() < 1e-6
    assert rgd_loss(feats, feats.clone(), mask).abs().item() < 1e-6
    # A teacher of another width whose graph has the same geometry (scaled rotation): still zero.
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen(4)))
    wider = torch.cat([3.0 * feats @ rotation, torch.zeros(3, 12, 8)], dim=-1)
    assert rgd_loss(feats, wider, mask).abs().item() < 1e-5


def test_gw_non_negative_and_permutation_invariant():
    student, teacher = random_graph(4, 10, 8, seed=5), random_graph(4, 10, 20, seed=6)
    mask = torch.ones(4, 10, dtype=torch.bool)
    value, _ = gromov_wasserstein_batch(graph_distances(student, mask), graph_distances(teacher, mask), mask)
    assert (value >= 0).all() and (value > 1e-4).all()
    loss = rgd_loss(student, teacher, mask)
    perm = torch.randperm(10, generator=gen(7))
    permuted = rgd_loss(student[:, perm], teacher[:, perm], mask)
    assert permuted.item() == pytest.approx(loss.item(), rel=1e-6, abs=1e-9)


def test_batched_gw_matches_pot_reference_and_recovers_permutation():
    feats = random_graph(1, 6, 5, seed=8)
    perm = torch.randperm(6, generator=gen(9))
    copy = feats[:, perm] + 0.01 * random_graph(1, 6, 5, seed=10)
    mask = torch.ones(1, 6, dtype=torch.bool)
    dist_a, dist_b = graph_distances(feats, mask), graph_distances(copy, mask)
    value, plan = gromov_wasserstein_batch(dist_a, dist_b, mask, TIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns about log(0) of the product plan's zeros
        reference = ot.solve_gromov(dist_a[0].numpy(), dist_b[0].numpy(), reg=TIGHT.epsilon, method="PPA",
                                    max_iter=300, tol=1e-10)
    assert value.item() == pytest.approx(float(reference.value_quad), abs=1e-4)
    assert value.item() < 1e-3  # the permuted copy is matched, not compared node by node
    # plan[i, j] couples node i of the first graph to node j of the copy, which is node perm[j].
    assert plan[0].argmax(dim=0).tolist() == perm.tolist()
    np.testing.assert_allclose(plan[0].numpy(), reference.plan, atol=1e-4)


def test_padding_has_no_effect():
    student, teacher = random_graph(2, 7, 6, seed=11), random_graph(2, 7, 9, seed=12)
    mask = torch.ones(2, 7, dtype=torch.bool)
    padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)

    def padded(seed, scale):
        return (torch.cat([student, scale * random_graph(2, 4, 6, seed=seed)], dim=1),
                torch.cat([teacher, -scale * random_graph(2, 4, 9, seed=seed + 1)], dim=1))

    for options in (TIGHT, GWOptions()):
        loss = rgd_loss(student, teacher, mask, options=options)
        garbage_1 = rgd_loss(*padded(13, 100.0), padded_mask, options=options)
        garbage_2 = rgd_loss(*padded(31, 0.01), padded_mask, options=options)
        assert garbage_1.item() == garbage_2.item()  # what the padded nodes hold is never read
        # The padded size only shifts the solver's stopping test (a mean over N x N plan entries).
        tolerance = 1e-9 if options is TIGHT else 1e-4 * loss.item()
        assert garbage_1.item() == pytest.approx(loss.item(), abs=tolerance)


@pytest.mark.parametrize("teacher_kind", ["permuted", "similar"])
def test_rgd_gradient_matches_finite_differences(teacher_kind):
    """Envelope gradient of the loss w.r.t. the student's feature map, against central differences."""
    node_index = torch.tensor([0, 0, 1, 2, 3, 3, 4, -1]).view(1, 2, 2, 2).repeat_interleave(2, dim=1)
    masks = soft_region_masks(node_index, 5, (2, 2, 2)).double()
    mask = torch.ones(1, 5, dtype=torch.bool)
    feature_map = torch.randn(1, 3, 2, 2, 2, generator=gen(15), dtype=torch.float64, requires_grad=True)
    base = node_features(feature_map, masks).detach()
    if teacher_kind == "permuted":
        teacher = base[:, [2, 0, 4, 1, 3]] @ torch.randn(3, 4, generator=gen(16), dtype=torch.float64)
    else:
        teacher = torch.cat([base, base[..., :1]], -1) + 0.2 * random_graph(1, 5, 4, seed=17)

    def loss_of(fmap):
        return rgd_loss(node_features(fmap, masks), teacher, mask, options=TIGHT)

    loss = loss_of(feature_map)
    assert loss.item() > 1e-4
    (grad,) = torch.autograd.grad(loss, feature_map)
    # Directional derivatives along random directions: every coordinate is exercised in a few evaluations.
    step = 1e-6
    with torch.no_grad():
        for seed in range(3):
            direction = torch.randn(feature_map.shape, generator=gen(100 + seed), dtype=torch.float64)
            numeric = (loss_of(feature_map + step * direction) - loss_of(feature_map - step * direction)) / (2 * step)
            assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-7)


def test_rgd_teacher_availability_and_weights():
    student = random_graph(2, 6, 4, seed=18)
    teacher_a, teacher_b = random_graph(2, 6, 5, seed=19), random_graph(2, 6, 7, seed=20)
    mask = torch.ones(2, 6, dtype=torch.bool)
    available = torch.tensor([[True, True], [True, False]])
    loss = rgd_loss(student, [teacher_a, teacher_b], mask, available, teacher_weights=[1.0, 3.0])
    changed_b = teacher_b.clone()
    changed_b[1] = 10 * random_graph(1, 6, 7, seed=21)[0]  # sample 1 of teacher b is excluded
    again = rgd_loss(student, [teacher_a, changed_b], mask, available, teacher_weights=[1.0, 3.0])
    assert again.item() == pytest.approx(loss.item(), rel=1e-9)
    sample_0 = rgd_loss(student[:1], [teacher_a[:1], teacher_b[:1]], mask[:1], teacher_weights=[1.0, 3.0])
    sample_1 = rgd_loss(student[1:], teacher_a[1:], mask[1:])
    assert loss.item() == pytest.approx((sample_0.item() + sample_1.item()) / 2, rel=1e-6)
    nobody = rgd_loss(student, [teacher_a, teacher_b], mask, torch.zeros(2, 2, dtype=torch.bool))
    assert nobody.item() == 0.0


def test_total_loss_and_weights():
    cls, kd, rgd = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    terms = {"cls": cls, "kd": kd, "rgd": rgd}
    assert total_loss(terms, load_config().loss_weights()).item() == pytest.approx(0.3 * 1 + 0.7 * 2 + 4.0)
    config = load_config(alpha=0.5, lambda_graph=0.25)
    assert total_loss(terms, config.loss_weights()).item() == pytest.approx(0.5 + 1.0 + 1.0)
    with pytest.raises(ConfigError, match="alpha"):
        load_config(alpha=1.5)
    with pytest.raises(ConfigError, match="loss must be"):
        load_config(loss="svm")
    with pytest.raises(ValueError, match="no value for the loss term"):
        total_loss({"cls": cls}, config.loss_weights())


def test_total_loss_is_bitwise_the_written_out_sum():
    """The registry-and-weights sum gives the very float of (1 - alpha) * cls + alpha * kd + lambda_g * rgd."""
    values = torch.rand(3, 200, generator=gen(40), dtype=torch.float32) * 10
    for alpha, lambda_g in ((0.7, 1.0), (0.3, 0.37), (0.123, 2.5), (0.0, 0.0), (1.0, 0.1)):
        weights = load_config(alpha=alpha, lambda_graph=lambda_g).loss_weights()
        for cls, kd, rgd in values.T:
            expected = (1.0 - alpha) * cls + alpha * kd + lambda_g * rgd
            assert torch.equal(total_loss({"cls": cls, "kd": kd, "rgd": rgd}, weights), expected)


def test_loss_registry():
    assert LOSSES["focal"] is focal_loss and LOSSES["ce"] is cross_entropy
    assert LOSSES["kd"] is kd_loss and LOSSES["rgd"] is rgd_loss
    logits, target = torch.randn(5, 3, generator=gen(41)), torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(classification_loss("focal", logits, target, gamma=1.5), focal_loss(logits, target, gamma=1.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rgd_on_gpu_matches_cpu():
    node_index = torch.randint(-1, 9, (3, 8, 16, 16), generator=gen(22))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[2, 7:] = False
    node_index[2][node_index[2] >= 7] = -1
    student_map = torch.randn(3, 16, 4, 8, 8, generator=gen(23))
    teacher_map = torch.randn(3, 24, 2, 4, 4, generator=gen(24))
    losses, grads = [], []
    for device in DEVICES_TO_COMPARE:
        fmap = student_map.to(device).detach().requires_grad_(True)  # a fresh leaf on each device
        student = node_features(fmap, soft_region_masks(node_index.to(device), 9, (4, 8, 8)))
        teacher = node_features(teacher_map.to(device), soft_region_masks(node_index.to(device), 9, (2, 4, 4)))
        loss = rgd_loss(student, teacher, mask.to(device), options=TIGHT)
        loss.backward()
        losses.append(loss.item())
        grads.append(fmap.grad.cpu())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)


def test_gw_plan_is_feasible_with_default_budget():
    student, teacher = random_graph(3, 20, 8, seed=25, dtype=torch.float32), random_graph(3, 20, 30, seed=26,
                                                                                         dtype=torch.float32)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[0, 15:] = False
    value, plan = gromov_wasserstein_batch(graph_distances(student, mask), graph_distances(teacher, mask), mask)
    expected = mask.float() / mask.sum(dim=1, keepdim=True)
    torch.testing.assert_close(plan.sum(dim=2), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(dim=1), expected, atol=1e-6, rtol=0)
    assert (plan >= 0).all() and (value > 0).all()


def test_relational_rgd_is_the_distance_matrix_mse_under_the_identity_correspondence():
    from reactkd.losses import edge_mse, graph_distances, rgd_loss

    torch.manual_seed(3)
    student, teacher = torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 4] = False
    value = rgd_loss(student, teacher, mask, edge_weight=0.0, kind="relational")
    expected = edge_mse(graph_distances(student, mask), graph_distances(teacher, mask), mask).mean()
    torch.testing.assert_close(value, expected)
    assert rgd_loss(student, student, mask, kind="relational") == 0
    # GW minimises over plans, the identity among them, whose value is the relational loss times (n - 1) / n
    gw = rgd_loss(student, teacher, mask, edge_weight=0.0)
    assert 0 < float(gw) <= float(value) + 1e-6
    with pytest.raises(ValueError, match="RGD kind"):
        rgd_loss(student, teacher, mask, kind="cosine")
