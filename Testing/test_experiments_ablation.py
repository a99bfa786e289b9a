"""The ablation's reporting (experiments/ablation.py): runs merged across invocations are paired case by case
against the no-KD student of the same seed, whatever order each run stored its cases in."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SETTINGS = {"folds": 3, "cases": 30, "cohort_seed": 7, "config": "demo.yaml"}


@pytest.fixture(scope="module")
def ablation():
    sys.path.insert(0, str(EXPERIMENTS))  # the script imports its sibling compare_models
    try:
        yield importlib.import_module("ablation")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def _run(seed, fold, ids, labels, probs, auc=0.5):
    return {"seed": seed, "fold": fold, "doses": {},
            "overall": {"auc_macro": auc, "accuracy": 0.5, "f1_macro": 0.5, "ece": 0.1,
                        "ci95": {"auc_macro": [auc - 0.1, auc + 0.1]}},
            "test_cases": {"ids": list(ids), "labels": np.asarray(labels).tolist(),
                           "probs": np.asarray(probs).tolist()}}


def _macro_auc(labels, probs):
    return np.mean([roc_auc_score(labels == k, probs[:, k]) for k in range(probs.shape[1])])


def test_paired_rows_pool_folds_and_match_cases_by_id(ablation):
    rng = np.random.default_rng(3)
    n = 60
    labels = np.arange(n) % 3
    ids = np.array([f"case{i:03d}" for i in range(n)])
    noise = rng.dirichlet(np.ones(3), size=n)
    better = 0.5 * noise + 0.5 * np.eye(3)[labels]
    folds = [np.arange(0, 30), np.arange(30, 60)]
    rows = {ablation.BASELINE: [], "+ logit KD": [], "other seed only": []}
    for fold, part in enumerate(folds):
        rows[ablation.BASELINE].append(_run(0, fold, ids[part], labels[part], noise[part]))
        reverse = part[::-1]  # stored in another order: pairing must go by case id
        rows["+ logit KD"].append(_run(0, fold, ids[reverse], labels[reverse], better[reverse]))
    rows["other seed only"].append(_run(1, 0, ids[folds[0]], labels[folds[0]], better[folds[0]]))

    paired = ablation.paired_rows(rows, [0])

    assert set(paired) == {"+ logit KD"}  # a row without runs of this seed is not paired
    result = paired["+ logit KD"]
    assert result["n_cases"] == n and result["n_groups"] == 2 and result["folds"] == [0, 1]
    # The mean of the per-fold AUCs: each fold's model is ranked only against itself.
    assert result["auc_macro_a"] == pytest.approx(np.mean([_macro_auc(labels[f], noise[f]) for f in folds]))
    assert result["auc_macro_b"] == pytest.approx(np.mean([_macro_auc(labels[f], better[f]) for f in folds]))
    assert result["difference"] > 0.2
    assert result["ci95"][0] > 0


def test_a_row_missing_a_fold_is_not_paired(ablation):
    labels = np.arange(12) % 3
    probs = np.full((12, 3), 1 / 3)
    ids = [f"c{i}" for i in range(12)]
    rows = {ablation.BASELINE: [_run(0, 0, ids[:6], labels[:6], probs[:6]), _run(0, 1, ids[6:], labels[6:], probs[6:])],
            "+ RGD": [_run(0, 0, ids[:6], labels[:6], probs[:6])]}
    assert ablation.paired_rows(rows, [0]) == {}
    assert ablation.paired_rows({"+ RGD": rows["+ RGD"]}, [0]) == {}  # no baseline, nothing to pair


def test_table_lists_every_run_and_the_paired_section(ablation):
    labels = np.arange(30) % 3
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(30)]
    rows = {ablation.BASELINE: [_run(0, 0, ids, labels, rng.dirichlet(np.ones(3), 30), auc=0.6),
                                _run(1, 2, ids, labels, rng.dirichlet(np.ones(3), 30), auc=0.8)],
            "+ RGD": [_run(0, 0, ids, labels, np.eye(3)[labels] * 0.5 + 1 / 6, auc=1.0)]}
    results = ablation.add_pairs({"rows": rows})

    text = ablation.table(results, SETTINGS)

    assert "runs (training seed, fold) [(0, 0), (1, 2)]" in text
    assert f"| {ablation.BASELINE} | 0.700 ± 0.100 |" in text  # mean ± SD over its two runs
    assert "| + RGD | 1.000 [0.900, 1.100] | - |" in text  # seed 1 fold 2 not run for this row
    assert "Seed 0: each row minus" in text and "Seed 1: each row minus" not in text
    assert "All seeds" not in text  # + RGD has no seed-1 run: nothing to pair over both seeds


def test_ladder_compares_each_addition_with_the_row_it_adds_to(ablation):
    rng = np.random.default_rng(5)
    labels = np.arange(45) % 3
    ids = [f"c{i:02d}" for i in range(45)]
    noise = rng.dirichlet(np.ones(3), size=45)
    probs = {ablation.BASELINE: noise, "+ logit KD": 0.7 * noise + 0.3 * np.eye(3)[labels],
             "+ RGD": 0.7 * noise + 0.3 * np.eye(3)[labels]}  # RGD adds nothing over logit KD
    rows = {name: [_run(0, 0, ids, labels, p)] for name, p in probs.items()}

    ladder = ablation.paired_rows(rows, [0], ablation.LADDER)

    assert set(ladder) == {"+ logit KD", "+ RGD"}  # the rows not run are left out
    assert ladder["+ logit KD"]["difference"] > 0.1
    assert ladder["+ RGD"]["difference"] == pytest.approx(0.0)
    assert ladder["+ RGD"]["auc_macro_a"] == pytest.approx(_macro_auc(labels, probs["+ logit KD"]))
    text = ablation.table(ablation.add_pairs({"rows": rows}), SETTINGS)
    assert "| + RGD | + logit KD |" in text and "| + RGD | " + ablation.BASELINE + " |" in text


def test_pairs_over_seeds_average_the_seeds_on_the_same_cases(ablation):
    rng = np.random.default_rng(9)
    labels = np.arange(36) % 3
    ids = [f"c{i:02d}" for i in range(36)]
    rows = {ablation.BASELINE: [], "+ logit KD": []}
    runs = {}
    splits = {0: (np.arange(0, 18), np.arange(18, 36)),  # the seed draws the folds: another split per seed
              1: (np.arange(0, 36, 2), np.arange(1, 36, 2)[::-1])}
    for seed in (0, 1):
        noise = rng.dirichlet(np.ones(3), size=36)
        runs[seed] = (noise, 0.8 * noise + 0.2 * np.eye(3)[labels])
        for fold, part in enumerate(splits[seed]):
            rows[ablation.BASELINE].append(_run(seed, fold, [ids[i] for i in part], labels[part], runs[seed][0][part]))
            rows["+ logit KD"].append(_run(seed, fold, [ids[i] for i in part], labels[part], runs[seed][1][part]))

    results = ablation.add_pairs({"rows": rows})

    both = results["paired"]["all"]["+ logit KD"]
    assert both["n_runs"] == 2 and both["n_cases"] == 36 and both["n_groups"] == 4
    per_fold = [_macro_auc(labels[part], runs[seed][1][part]) for seed in (0, 1) for part in splits[seed]]
    assert both["auc_macro_b"] == pytest.approx(np.mean(per_fold))
    assert both["difference"] == pytest.approx(np.mean([results["paired"][str(s)]["+ logit KD"]["difference"]
                                                        for s in (0, 1)]))
    text = ablation.table(results, SETTINGS)
    assert "All seeds (the mean over the seeds; the CI covers case sampling given these runs" in text
    assert both["folds"] == [0, 1] and "| 36 | 0, 1 |" in text


def test_what_cannot_be_paired_is_said_not_dropped(ablation):
    labels = np.arange(30) % 3
    ids = [f"c{i}" for i in range(30)]
    probs = np.random.default_rng(2).dirichlet(np.ones(3), size=30)
    rows = {ablation.BASELINE: [_run(0, 0, ids[:15], labels[:15], probs[:15]),
                                _run(0, 1, ids[15:], labels[15:], probs[15:])],
            "+ logit KD": [_run(0, 0, ids[:15], labels[:15], probs[:15])],  # fold 1 not run yet
            "SF teacher (PET/CT)": [{**_run(0, 0, [], [], []), "test_cases": None}]}
    del rows["SF teacher (PET/CT)"][0]["test_cases"]  # scored on PET/CT: no per-case record, never paired

    results = ablation.add_pairs({"rows": rows})

    assert results["paired"]["0"] == {}
    assert results["not_paired"]["0"] == ["+ logit KD vs student, CT only, no KD: not run on the same cases "
                                          "(a fold missing?)"] * 2  # the no-KD table and the ladder
    assert "Not paired (seed 0): + logit KD vs" in ablation.table(results, SETTINGS)


def test_a_case_in_two_runs_of_one_seed_or_another_label_is_refused(ablation):
    labels = np.arange(12) % 3
    probs = np.full((12, 3), 1 / 3)
    ids = [f"c{i}" for i in range(12)]
    twice = {ablation.BASELINE: [_run(0, 0, ids, labels, probs), _run(0, 1, ids[:6], labels[:6], probs[:6])]}
    with pytest.raises(ValueError, match="a case appears in two of its runs"):
        ablation.pooled_test_cases(twice, 0)
    relabelled = {ablation.BASELINE: [_run(0, 0, ids, labels, probs)],
                  "+ RGD": [_run(0, 0, ids, (labels + 1) % 3, probs)]}
    skipped = []
    assert ablation.paired_rows(relabelled, [0], skipped=skipped) == {}
    assert skipped == ["+ RGD vs student, CT only, no KD: not run on the same cases (a fold missing?)"]


@pytest.mark.slow
def test_the_script_trains_scores_and_resumes_a_tiny_ablation(tmp_path, monkeypatch, capsys):
    """End to end on 12 tiny cases, 2 folds, two student rows: every run is recorded with its per-case test
    probabilities, a second invocation adds a seed without retraining the first, and another design is refused."""
    import json

    from tiny_training import TINY_CONFIG

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG + "epochs: 1\n")
    script = ablation_main(monkeypatch)
    common = ["--out", "abl", "--cases", "12", "--folds", "2", "--config", "tiny.yaml", "--device", "cpu",
              "--teacher-epochs", "1", "1", "--rows", "+ logit KD", "--only-folds", "0"]
    script([*common, "--seeds", "0"])
    first = json.loads((tmp_path / "abl/ablation.json").read_text())
    assert set(first["rows"]) == {"SF teacher (PET/CT)", "dose teacher (CT)", "student, CT only, no KD", "+ logit KD"}
    run = first["rows"]["+ logit KD"][0]
    assert (run["seed"], run["fold"], run["folds"]) == (0, 0, 2) and len(run["test_cases"]["ids"]) == 6
    assert 0 <= run["gradcam_in_tumour_ring"] <= 1
    assert first["settings"] == {"cases": 12, "cohort_seed": 7, "folds": 2, "config": "tiny.yaml"}
    package = tmp_path / "abl/seed0/fold0/plus_logit_KD/model.safetensors"
    stamp = package.stat().st_mtime_ns

    script([*common, "--seeds", "1"])
    second = json.loads((tmp_path / "abl/ablation.json").read_text())
    assert sorted((r["seed"], r["fold"]) for r in second["rows"]["+ logit KD"]) == [(0, 0), (1, 0)]
    assert package.stat().st_mtime_ns == stamp  # seed 0 kept, not retrained
    by_seed = {r["seed"]: set(r["test_cases"]["ids"]) for r in second["rows"]["+ logit KD"]}
    if by_seed[0] == by_seed[1]:
        assert second["paired"]["all"]["+ logit KD"]["n_runs"] == 2
    else:  # each seed draws its folds: fold 0 alone holds other cases, and the table says so
        assert "+ logit KD" not in second["paired"]["all"]
        assert any(r.startswith("+ logit KD vs") for r in second["not_paired"]["all"])
    assert "Seed 1: each row minus" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="mix two designs"):
        script([*common, "--seeds", "2", "--folds", "3"])


def ablation_main(monkeypatch):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        module = importlib.import_module("ablation")
    finally:
        sys.path.remove(str(EXPERIMENTS))

    def script(argv):
        monkeypatch.setattr(sys, "argv", ["ablation.py", *argv])
        module.main()

    return script
