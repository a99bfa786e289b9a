"""The student's loss reads each case's own teacher targets from the cache (by case index, not by position in
the batch), and the dose teacher's inputs are the CT degraded by the simulator, with the PET channels empty."""

from __future__ import annotations

import pytest
import torch

from reactkd.cli.evaluate import dose_inputs
from reactkd.cli.main import main
from reactkd.cohort.cache import TENSOR_FIELDS, load_cohort
from reactkd.cohort.doses import load_dose_cache
from reactkd.cohort.manifest import read_manifest
from reactkd.errors import ConfigError
from reactkd.graph import node_features, soft_region_masks
from reactkd.losses import kd_loss, rgd_loss
from reactkd.models import graph_map
from reactkd.training.config import load_config
from reactkd.training.stages import make_stage
from reactkd.training.teacher_cache import TeacherTargets
from tiny_training import TINY_CONFIG

N_CLASSES, NODE_CHANNELS = 3, (5, 7)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    assert main(["synth", "--out", str(root / "data"), "--cases", "4", "--seed", "5"]) == 0
    (root / "c.yaml").write_text(TINY_CONFIG.replace("grid: [32, 32, 32]", "grid: [16, 32, 32]")
                                 + "modality_dropout: 0.0\nct_only_share: 0.0\n")
    config = load_config(root / "c.yaml")
    records = read_manifest(root / "data/manifest.csv")
    cohort = load_cohort(records, config.preprocess_config(), config.graph, cache_dir=root / "cache")
    return config, cohort, records


def batch_of(cohort, indices: list[int]) -> dict[str, torch.Tensor]:
    idx = torch.tensor(indices)
    return {**{name: getattr(cohort, name)[idx] for name in TENSOR_FIELDS}, "case_index": idx}


def test_student_loss_uses_each_cases_own_teacher_targets(setting):
    config, cohort, _ = setting
    torch.manual_seed(0)
    n, n_nodes = len(cohort), int(cohort.n_nodes.max())
    targets = TeacherTargets(torch.randn(n, 2, N_CLASSES) * 3, [torch.randn(n, n_nodes, c) for c in NODE_CHANNELS],
                             torch.tensor([[True, True], [True, False], [True, True], [False, True]]))
    stage = make_stage("student", config, targets)
    stage.model.eval()  # no dropout: the forward below is the one inside the loss
    order = [2, 0, 3]  # not the cases' positions in the cohort
    batch = batch_of(cohort, order)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        terms = stage.loss(stage.model, batch, generator, config)
        out = stage.model(batch["images"], batch["available"], batch["region_labels"])
    mask = torch.arange(int(batch["n_nodes"].max()))[None] < batch["n_nodes"][:, None]
    weights = torch.tensor(config.teacher_weights[:2])
    own = torch.tensor(order)
    expected_kd = kd_loss(out.logits, targets.logits[own].transpose(0, 1), targets.usable[own].transpose(0, 1),
                          weights, config.temperature)
    feature_map = graph_map(out, config.rgd_map)  # the stride-4 map by default
    assert feature_map.shape[2:] == tuple(n // 4 for n in batch["images"].shape[2:])
    student_nodes = node_features(feature_map, soft_region_masks(batch["node_index"], mask.shape[1],
                                                                 feature_map.shape[2:]))
    expected_rgd = rgd_loss(student_nodes, [t[own, :mask.shape[1]] for t in targets.nodes], mask,
                            targets.usable[own].transpose(0, 1), weights, epsilon=config.gw_epsilon,
                            edge_weight=config.edge_weight)
    torch.testing.assert_close(terms["kd"], expected_kd)
    torch.testing.assert_close(terms["rgd"], expected_rgd)
    # The targets of the batch positions (cases 0, 1, 2) give another loss: the lookup is what is tested.
    by_position = kd_loss(out.logits, targets.logits[:3].transpose(0, 1), targets.usable[:3].transpose(0, 1),
                          weights, config.temperature)
    assert not torch.allclose(by_position, expected_kd)


def test_dose_teacher_sees_degraded_ct_and_no_pet(setting):
    """Each sample is the case's cached CT channel at one configured dose: what `evaluate --doses` computes."""
    config, cohort, records = setting
    stage = make_stage("teacher-dose", config)
    with_pet = torch.nonzero(cohort.available[:, 1:].any(dim=1)).flatten().tolist()
    batch = batch_of(cohort, with_pet)
    with pytest.raises(ConfigError, match="degraded CTs"):
        stage.degraded_inputs(batch, torch.Generator().manual_seed(3))
    cohort.dose_ct = torch.from_numpy(load_dose_cache(records, config.preprocess_config(), config.doses,
                                                      cohort.key, None))
    batch = {**batch, "dose_ct": cohort.dose_ct[torch.tensor(with_pet)]}
    images, available = stage.degraded_inputs(batch, torch.Generator().manual_seed(3))
    assert with_pet and available.tolist() == [[True, False, False]] * len(with_pet)
    assert not images[:, 1:].any()  # PET channels empty although every one of these cases has a PET
    for position, case in enumerate(with_pet):
        shown = [torch.equal(images[position, 0], cohort.dose_ct[case, k]) for k in range(len(config.doses))]
        assert sum(shown) >= 1, "every sample is one of its case's degraded CTs"
    inputs = dose_inputs([records[i] for i in with_pet], config.preprocess_config(), config.doses)
    for k, dose in enumerate(config.doses):  # evaluation computes the very same channels
        torch.testing.assert_close(inputs[dose][0][:, 0], cohort.dose_ct[torch.tensor(with_pet), k], rtol=0, atol=0)
    assert 0 <= float(images.min()) and float(images.max()) <= 1
