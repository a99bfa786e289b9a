"""Learning-rate schedule in optimiser steps, grade-balanced batches, and the inner validation split."""

import math

import numpy as np
import pytest
import torch

from reactkd.cohort.folds import inner_split, split_fold
from reactkd.cohort.manifest import CaseRecord
from reactkd.errors import ConfigError
from reactkd.training.engine import epoch_order, warmup_cosine


def test_warmup_then_cosine_counted_in_steps():
    factor = warmup_cosine(10, 100)
    assert factor(0) == pytest.approx(1 / 11) and factor(9) == pytest.approx(10 / 11)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    short = warmup_cosine(50, 20)  # warm-up capped at a fifth of a short run
    assert short(4) == pytest.approx(1.0)


def test_balanced_order_spreads_every_grade_through_the_epoch():
    labels = torch.tensor([0] * 12 + [1] * 12 + [2] * 12)
    generator = torch.Generator().manual_seed(3)
    order = epoch_order(labels, generator, balanced=True)
    assert sorted(order.tolist()) == list(range(36))
    batches = labels[order].view(-1, 6)
    assert all(len(torch.unique(b)) == 3 for b in batches)  # every batch of 6 holds every grade
    plain = epoch_order(labels, torch.Generator().manual_seed(3), balanced=False)
    assert sorted(plain.tolist()) == list(range(36))
    again = epoch_order(labels, torch.Generator().manual_seed(3), balanced=True)
    assert torch.equal(order, again)


def test_balanced_order_on_an_unbalanced_cohort_keeps_proportions():
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 5)
    order = epoch_order(labels, torch.Generator().manual_seed(0), balanced=True)
    first_half = labels[order[:18]]
    counts = torch.bincount(first_half, minlength=3).tolist()
    assert counts == pytest.approx([10, 5, 2.5], abs=1.6)


def _records(n_patients: int, scans: int = 1) -> list[CaseRecord]:
    rows = []
    for p in range(n_patients):
        for s in range(scans):
            rows.append(CaseRecord(case_id=f"c{p}_{s}", patient_id=f"p{p}", label=p % 3, ct=None, mask=None,
                                   pet_fdg=None, pet_act=None))
    return rows


def test_inner_split_is_inside_the_training_part_and_patient_grouped():
    records = _records(30, scans=2)
    train_part, test = split_fold(records, 0, 3)
    fit, val = inner_split(records, train_part, 0.2, seed=0)
    assert set(fit) | set(val) == set(train_part) and not set(fit) & set(val)
    assert not (set(fit) | set(val)) & set(test)
    patients = lambda idx: {records[i].patient_id for i in idx}  # noqa: E731
    assert not patients(fit) & patients(val)
    assert math.isclose(len(val) / len(train_part), 0.2, abs_tol=0.08)
    assert len({records[i].label for i in val}) == 3
    assert inner_split(records, train_part, 0.2, seed=0) == (fit, val)


def test_inner_split_of_a_tiny_fold_is_coarser_and_refuses_a_single_patient():
    records = _records(12)  # 8 training cases, 2-3 per grade: 5 splits are impossible, 2 are not
    train_part, _ = split_fold(records, 0, 3)
    fit, val = inner_split(records, train_part, 0.2)
    assert fit and val and set(fit) | set(val) == set(train_part)
    one_patient = _records(1, scans=3)
    with pytest.raises(ConfigError, match="too few"):
        inner_split(one_patient, [0, 1, 2], 0.2)


def test_class_balance_is_not_lost_in_a_fold():
    labels = np.array([r.label for r in _records(30)])
    fit, _ = inner_split(_records(30), list(range(30)), 0.2)
    assert set(np.bincount(labels[fit]).tolist()) <= {8, 7, 9}


def test_teacher_stages_get_their_own_peak_rate():
    from reactkd.training.config import TrainConfig

    config = TrainConfig(learning_rate=3e-4, teacher_learning_rate=1e-3)
    assert config.stage_learning_rate("teacher-sf") == config.stage_learning_rate("teacher-dose") == 1e-3
    assert config.stage_learning_rate("student") == 3e-4
    assert TrainConfig(learning_rate=2e-4).stage_learning_rate("teacher-sf") == 2e-4
    for bad in (dict(teacher_learning_rate=0.0), dict(warmup_steps=-1), dict(head="mean"),
                dict(inner_val_fraction=0.9)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
