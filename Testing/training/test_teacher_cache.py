"""Frozen-teacher cache: computed once, reused, rebuilt when stale or damaged, never silently wrong."""

import numpy as np
import pytest
import torch

from reactkd.cohort.cache import CohortTensors
from reactkd.models import build_model
from reactkd.training import teacher_cache
from synthetic_images import regions_like

GRID = (16, 32, 32)


@pytest.fixture(scope="module")
def cohort():
    torch.manual_seed(0)
    n = 5
    images = torch.rand(n, 3, *GRID)
    regions = regions_like(images)
    node_index = torch.where(regions >= 3, 0, torch.where(regions == 2, 1, torch.where(regions == 1, 2, -1)))
    return CohortTensors(images=images, available=torch.tensor([[True, True, False]] * 3 + [[True, False, False]] * 2),
                         ct_hu=torch.rand(n, *GRID), node_index=node_index.to(torch.int16), region_labels=regions,
                         n_nodes=torch.full((n,), 3), labels=torch.tensor([0, 1, 2, 0, 1]),
                         spacing=torch.ones(n, 3), case_ids=[f"c{i}" for i in range(n)], key="cohort-a")


CPU, MAP = torch.device("cpu"), "stride4"


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(1)
    models = [build_model("sf_teacher", feature_size=12, window_size=4, depths=[1, 1, 1, 1]).eval(),
              build_model("dose_teacher", feature_size=12, window_size=4, depths=[1, 1, 1, 1]).eval()]
    return models


def test_targets_equal_a_direct_teacher_forward(cohort, teachers):
    targets = teacher_cache.compute_teacher_targets(teachers, cohort, CPU, rgd_map="deepest")
    assert targets.logits.shape == (5, 2, 3) and targets.usable.shape == (5, 2)
    assert targets.usable[:, 0].tolist() == [True, True, True, False, False]  # SF teacher needs a PET
    assert targets.usable[:, 1].all()
    with torch.no_grad():
        direct = teachers[1](cohort.images[3:5], cohort.available[3:5], cohort.region_labels[3:5])
    torch.testing.assert_close(targets.logits[3:5, 1], direct.logits)
    assert targets.nodes[1].shape == (5, 3, direct.features.shape[1])
    fine = teacher_cache.compute_teacher_targets(teachers, cohort, CPU, rgd_map="stride4")
    assert fine.nodes[0].shape[2] == 2 * direct.scales[0].shape[1]  # both SF branches' stride-4 maps
    torch.testing.assert_close(fine.logits, targets.logits)  # the map the nodes pool changes nothing else


def test_cache_is_written_once_then_reused(cohort, teachers, tmp_path, monkeypatch):
    first = teacher_cache.load_or_build(tmp_path, teachers, ["a" * 64, "b" * 64], cohort, CPU, rgd_map=MAP)
    files = list(tmp_path.glob("teachers-*.safetensors"))
    assert len(files) == 1

    def fail(*_args, **_kwargs):
        raise AssertionError("the teachers ran although the cache was intact")

    monkeypatch.setattr(teacher_cache, "compute_teacher_targets", fail)
    again = teacher_cache.load_or_build(tmp_path, teachers, ["a" * 64, "b" * 64], cohort, CPU, rgd_map=MAP)
    torch.testing.assert_close(again.logits, first.logits)
    for a, b in zip(again.nodes, first.nodes):
        torch.testing.assert_close(a, b)


def test_another_teacher_or_cohort_builds_another_file(cohort, teachers, tmp_path):
    teacher_cache.load_or_build(tmp_path, teachers, ["a" * 64, "b" * 64], cohort, CPU, rgd_map=MAP)
    teacher_cache.load_or_build(tmp_path, teachers, ["c" * 64, "b" * 64], cohort, CPU, rgd_map=MAP)
    other = CohortTensors(**{**cohort.__dict__, "key": "cohort-b"})
    teacher_cache.load_or_build(tmp_path, teachers, ["a" * 64, "b" * 64], other, CPU, rgd_map=MAP)
    teacher_cache.load_or_build(tmp_path, teachers, ["a" * 64, "b" * 64], cohort, CPU, rgd_map="deepest")
    assert len(list(tmp_path.glob("teachers-*.safetensors"))) == 4  # another graph map is another file


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_damaged_cache_is_rebuilt_with_a_message(cohort, teachers, tmp_path, damage):
    sha = ["a" * 64, "b" * 64]
    good = teacher_cache.load_or_build(tmp_path, teachers, sha, cohort, CPU, rgd_map=MAP)
    (path,) = tmp_path.glob("teachers-*.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        data[-5] ^= 0xFF  # inside the last tensor: only the checksum can tell
        path.write_bytes(bytes(data))
    else:  # a valid cache of another cohort copied over this name
        other = CohortTensors(**{**cohort.__dict__, "key": "elsewhere"})
        teacher_cache.load_or_build(tmp_path / "x", teachers, sha, other, CPU, rgd_map=MAP)
        path.write_bytes(next((tmp_path / "x").glob("*.safetensors")).read_bytes())
    messages = []
    rebuilt = teacher_cache.load_or_build(tmp_path, teachers, sha, cohort, CPU, notify=messages.append,
                                          rgd_map=MAP)
    assert len(messages) == 1 and "rebuilding" in messages[0]
    assert {"truncate": "unreadable", "flip": "checksum", "foreign": "another"}[damage] in messages[0]
    torch.testing.assert_close(rebuilt.logits, good.logits)
    assert np.isfinite(rebuilt.logits.numpy()).all()
