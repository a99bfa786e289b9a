"""Classification metrics: agreement with scikit-learn, hand-computed Brier/ECE, bootstrap CIs, degenerate
input and JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from reactkd.evaluation.metrics import (
    _macro_f1_from_confusions,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
    weighted_auc,
)

NAMES = ("well", "moderate", "poor")


def _softmax_predictions(n: int, signal: float, seed: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose true-class logit is raised by `signal`."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits)
    return y, probs / probs.sum(axis=1, keepdims=True)


def _strict_json(obj: dict) -> str:
    return json.dumps(obj, allow_nan=False)


def test_perfect_classifier_scores_one():
    y = np.array([0, 1, 2, 0, 1, 2, 2, 1])
    probs = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, probs, NAMES, n_bootstrap=50)
    assert m["auc_macro"] == 1.0 and m["auc_micro"] == 1.0
    assert all(v == 1.0 for v in m["auc_per_class"].values())
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0
    assert all(v == 1.0 for v in m["sensitivity"].values())
    assert all(v == 1.0 for v in m["specificity"].values())
    assert m["ci95"]["accuracy"] == [1.0, 1.0]
    assert m["confusion_matrix"] == np.diag(np.bincount(y)).tolist()


def test_random_predictions_have_chance_auc():
    rng = np.random.default_rng(1)
    n = 20000
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    m = classification_metrics(y, probs, NAMES, n_bootstrap=0)
    assert abs(m["auc_macro"] - 0.5) < 0.02
    assert abs(m["auc_micro"] - 0.5) < 0.02
    assert abs(m["accuracy"] - 1 / 3) < 0.02
    assert m["ci95"]["auc_macro"] == [None, None]  # no bootstrap requested


def test_point_metrics_equal_direct_scikit_learn_calls():
    y, probs = _softmax_predictions(400, signal=1.0, seed=2)
    m = classification_metrics(y, probs, NAMES, n_bootstrap=0)
    pred = probs.argmax(axis=1)
    assert m["auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"),
                                           abs=1e-12)
    per_class = roc_auc_score(y, probs, multi_class="ovr", average=None)
    assert list(m["auc_per_class"].values()) == pytest.approx(per_class, abs=1e-12)
    micro = roc_auc_score(label_binarize(y, classes=[0, 1, 2]), probs, average="micro")
    assert m["auc_micro"] == pytest.approx(micro, abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    assert list(m["sensitivity"].values()) == pytest.approx(recall_score(y, pred, average=None))
    specificity = [recall_score(y != c, pred != c) for c in range(3)]
    assert list(m["specificity"].values()) == pytest.approx(specificity)
    assert m["class_counts"] == np.bincount(y, minlength=3).tolist()


def test_bootstrap_intervals_contain_estimates_and_depend_on_seed():
    y, probs = _softmax_predictions(150, signal=1.2, seed=3)
    m = classification_metrics(y, probs, NAMES, n_bootstrap=200, seed=0)
    ci = m["ci95"]
    for key in ("auc_macro", "accuracy", "f1_macro"):
        low, high = ci[key]
        assert low < m[key] < high, key
    for name in NAMES:
        low, high = ci["auc_per_class"][name]
        assert low < m["auc_per_class"][name] < high, name
    assert m["bootstrap"]["n_skipped_auc"] == 0
    again = classification_metrics(y, probs, NAMES, n_bootstrap=200, seed=0)
    other = classification_metrics(y, probs, NAMES, n_bootstrap=200, seed=1)
    assert again["ci95"] == ci
    assert other["ci95"]["auc_macro"] != ci["auc_macro"]


def test_vectorised_bootstrap_equals_a_loop_over_scikit_learn():
    """Reference: redraw the same index sets (documented generator and order) and score each resample."""
    y, probs = _softmax_predictions(60, signal=1.0, seed=9)
    n_boot = 40
    m = classification_metrics(y, probs, NAMES, n_bootstrap=n_boot, seed=5)
    indices = np.random.default_rng(5).integers(0, 60, size=(n_boot, 60))
    acc, f1, macro = [], [], []
    for drawn in indices:
        yb, pb = y[drawn], probs[drawn]
        acc.append(accuracy_score(yb, pb.argmax(axis=1)))
        f1.append(f1_score(yb, pb.argmax(axis=1), labels=[0, 1, 2], average="macro", zero_division=0))
        if len(np.unique(yb)) == 3:
            macro.append(roc_auc_score(yb, pb, multi_class="ovr", average="macro"))
    assert m["ci95"]["accuracy"] == pytest.approx(np.percentile(acc, [2.5, 97.5]), abs=1e-12)
    assert m["ci95"]["f1_macro"] == pytest.approx(np.percentile(f1, [2.5, 97.5]), abs=1e-12)
    assert m["ci95"]["auc_macro"] == pytest.approx(np.percentile(macro, [2.5, 97.5]), abs=1e-12)
    assert m["bootstrap"]["n_skipped_auc"] == n_boot - len(macro)


def test_bootstrap_skips_and_reports_resamples_missing_a_class():
    y, probs = _softmax_predictions(40, signal=1.0, seed=4)
    y[:] = np.where(y == 2, 1, y)
    y[0] = 2  # a single sample of the last class: most resamples miss it
    m = classification_metrics(y, probs, NAMES, n_bootstrap=300)
    skipped = m["bootstrap"]["n_skipped_auc"]
    assert 0 < skipped < 300
    assert any("skipped" in note for note in m["notes"])
    assert m["ci95"]["auc_macro"][0] is not None


def test_brier_and_ece_by_hand():
    y = np.array([0, 1, 2, 0])
    probs = np.array([[0.70, 0.20, 0.10],   # correct, confidence 0.70 -> bin (0.6, 0.7]
                      [0.50, 0.30, 0.20],   # wrong,   confidence 0.50 -> bin (0.4, 0.5]
                      [0.03, 0.02, 0.95],   # correct, confidence 0.95 -> bin (0.9, 1.0]
                      [0.15, 0.65, 0.20]])  # wrong,   confidence 0.65 -> bin (0.6, 0.7]
    per_sample = [0.09 + 0.04 + 0.01, 0.25 + 0.49 + 0.04, 0.0009 + 0.0004 + 0.0025, 0.7225 + 0.4225 + 0.04]
    assert brier_score(y, probs) == pytest.approx(np.mean(per_sample))
    ece = 2 / 4 * abs(0.5 - 0.675) + 1 / 4 * abs(0.0 - 0.5) + 1 / 4 * abs(1.0 - 0.95)
    assert expected_calibration_error(y, probs) == pytest.approx(ece)
    m = classification_metrics(y, probs, NAMES, n_bootstrap=0)
    assert m["brier"] == pytest.approx(np.mean(per_sample))
    assert m["ece"] == pytest.approx(ece)


def test_brier_matches_scikit_learn_multiclass_definition():
    from sklearn.metrics import brier_score_loss
    y, probs = _softmax_predictions(60, signal=0.5, seed=5)
    try:
        expected = brier_score_loss(y, probs, labels=[0, 1, 2], scale_by_half=False)
    except TypeError:
        pytest.skip("scikit-learn < 1.7 has no multiclass Brier score")
    assert brier_score(y, probs) == pytest.approx(expected)


def test_reliability_bins_are_right_closed():
    y = np.array([0, 0, 1])
    probs = np.array([[0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1]])
    table = reliability_bins(y, probs, n_bins=10)
    assert table["count"][3] == 1  # 0.4 lies in (0.3, 0.4], not (0.4, 0.5]
    assert table["count"][5] == 1  # 0.6 lies in (0.5, 0.6]
    assert table["count"][6] == 1
    assert table["accuracy"][3] == 0.0 and table["accuracy"][6] == 1.0
    assert table["confidence"][0] is None  # empty bin


def test_absent_class_gives_none_and_a_note_not_a_crash():
    y, probs = _softmax_predictions(80, signal=1.0, seed=6)
    y = np.where(y == 2, 0, y)
    m = classification_metrics(y, probs, NAMES, n_bootstrap=30)
    assert m["auc_per_class"]["poor"] is None
    assert m["sensitivity"]["poor"] is None
    assert m["ci95"]["auc_per_class"]["poor"] == [None, None]
    assert any("poor" in note for note in m["notes"])
    present = [m["auc_per_class"]["well"], m["auc_per_class"]["moderate"]]
    assert m["auc_macro"] == pytest.approx(np.mean(present))
    _strict_json(m)


def test_single_class_present_has_no_auc():
    y = np.zeros(10, dtype=int)
    probs = np.tile([0.6, 0.3, 0.1], (10, 1))
    m = classification_metrics(y, probs, NAMES, n_bootstrap=20)
    assert m["auc_macro"] is None and m["auc_micro"] is None
    assert m["ci95"]["auc_macro"] == [None, None]
    assert m["accuracy"] == 1.0
    assert m["specificity"]["well"] is None  # no negatives
    _strict_json(m)


def test_output_is_strict_json():
    y, probs = _softmax_predictions(50, signal=1.0, seed=7)
    text = _strict_json(classification_metrics(y, probs, NAMES, n_bootstrap=20))
    assert json.loads(text)["n_samples"] == 50


@pytest.mark.parametrize("y, probs", [
    (np.array([0, 1]), np.full((3, 3), 1 / 3)),         # length mismatch
    (np.array([0, 3]), np.full((2, 3), 1 / 3)),         # label outside 0..K-1
    (np.array([0, 1]), np.full((2, 2), 0.5)),           # K differs from class names
    (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5]] * 2)),
    (np.array([], dtype=int), np.empty((0, 3))),
])
def test_bad_input_raises_value_error(y, probs):
    with pytest.raises(ValueError):
        classification_metrics(y, probs, NAMES, n_bootstrap=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=2, max_value=30))
def test_weighted_auc_equals_scikit_learn_on_resamples_with_ties(seed, n):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 1)  # coarse rounding creates ties
    positive = rng.random(n) < 0.4
    indices = rng.integers(0, n, (5, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in indices])
    auc = weighted_auc(scores, positive, counts)
    for row, drawn in enumerate(indices):
        labels = positive[drawn]
        if labels.all() or not labels.any():
            assert np.isnan(auc[row])
        else:
            assert auc[row] == pytest.approx(roc_auc_score(labels, scores[drawn]), abs=1e-12)


def test_vectorised_macro_f1_equals_scikit_learn():
    rng = np.random.default_rng(8)
    y_true = rng.integers(0, 3, (20, 15))
    y_pred = rng.integers(0, 3, (20, 15))
    y_pred[0] = 0  # a row with classes never predicted (zero_division path)
    confusions = np.stack([confusion_matrix(t, p, labels=[0, 1, 2]) for t, p in zip(y_true, y_pred)])
    expected = [f1_score(t, p, labels=[0, 1, 2], average="macro", zero_division=0)
                for t, p in zip(y_true, y_pred)]
    assert _macro_f1_from_confusions(confusions) == pytest.approx(expected, abs=1e-12)


def test_paired_macro_auc_difference():
    from sklearn.metrics import roc_auc_score

    from reactkd.evaluation.metrics import paired_macro_auc_difference

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    noise = rng.dirichlet(np.ones(3), size=90)
    informed = 0.5 * noise + 0.5 * np.eye(3)[y]
    same = paired_macro_auc_difference(y, noise, noise, n_bootstrap=300)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and same["p_b_not_better"] == 1.0
    better = paired_macro_auc_difference(y, noise, informed, n_bootstrap=300)
    expected = np.mean([roc_auc_score(y == c, informed[:, c]) for c in range(3)]) - \
        np.mean([roc_auc_score(y == c, noise[:, c]) for c in range(3)])
    assert better["difference"] == pytest.approx(expected)
    assert better["ci95"][0] > 0 and better["p_b_not_better"] < 0.01 and better["n_cases"] == 90


def test_paired_macro_auc_difference_over_several_runs_averages_them_on_shared_resamples():
    from sklearn.metrics import roc_auc_score

    from reactkd.evaluation.metrics import paired_macro_auc_difference

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    a = rng.dirichlet(np.ones(3), size=(2, 60))  # two seeds of model A
    b = 0.6 * a + 0.4 * np.eye(3)[y]  # each run of B better than its run of A
    result = paired_macro_auc_difference(y, a, b, n_bootstrap=400)

    def macro(p):
        return np.mean([roc_auc_score(y == c, p[:, c]) for c in range(3)])

    assert result["auc_macro_a"] == pytest.approx(np.mean([macro(run) for run in a]))
    assert result["auc_macro_b"] == pytest.approx(np.mean([macro(run) for run in b]))
    assert result["n_runs"] == 2 and result["n_cases"] == 60 and result["ci95"][0] > 0
    one_run = paired_macro_auc_difference(y, a[0], b[0], n_bootstrap=400)  # (N, K) is one run
    assert one_run["n_runs"] == 1 and one_run["difference"] == pytest.approx(macro(b[0]) - macro(a[0]))
    with pytest.raises(ValueError, match="same number of runs"):
        paired_macro_auc_difference(y, a, b[:1], n_bootstrap=10)


def test_paired_difference_with_groups_never_ranks_one_fold_model_against_another():
    from sklearn.metrics import roc_auc_score

    from reactkd.evaluation.metrics import paired_macro_auc_difference

    rng = np.random.default_rng(6)
    y = np.tile([0, 1, 2], 20)
    folds = np.repeat([0, 1], 30)
    a = rng.dirichlet(np.ones(3), size=60)
    b = a.copy()
    b[folds == 1] = 0.5 * b[folds == 1] + 0.5  # fold 1's model scores everything higher: same ranking inside it

    def macro(p, part):
        return np.mean([roc_auc_score(y[part] == c, p[part, c]) for c in range(3)])

    grouped = paired_macro_auc_difference(y, a, b, n_bootstrap=200, groups=folds)
    assert grouped["difference"] == pytest.approx(0.0, abs=1e-12)  # pooled, the shift alone would move the AUC
    assert grouped["ci95"] == pytest.approx([0.0, 0.0], abs=1e-12) and grouped["n_groups"] == 2
    assert grouped["auc_macro_a"] == pytest.approx(np.mean([macro(a, folds == f) for f in (0, 1)]))
    pooled = paired_macro_auc_difference(y, a, b, n_bootstrap=200)
    assert pooled["difference"] != pytest.approx(0.0, abs=1e-3)


def test_paired_difference_of_repeated_identical_runs_equals_one_run():
    """Cases are drawn once for all runs: two identical runs give the single run's interval exactly
    (independent draws per run would narrow it)."""
    from reactkd.evaluation.metrics import paired_macro_auc_difference

    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 15)
    a = rng.dirichlet(np.ones(3), size=45)
    b = 0.7 * a + 0.3 * np.eye(3)[y]
    one = paired_macro_auc_difference(y, a, b, n_bootstrap=300, seed=3)
    two = paired_macro_auc_difference(y, np.stack([a, a]), np.stack([b, b]), n_bootstrap=300, seed=3)
    assert two["ci95"] == pytest.approx(one["ci95"]) and two["p_b_not_better"] == one["p_b_not_better"]
    assert two["difference"] == pytest.approx(one["difference"])

def test_attention_share_counts_the_tumour_and_a_ring_of_the_given_width():
    from reactkd.evaluation.metrics import attention_share

    mask = np.ones((20, 20, 20), np.uint8)
    mask[9:11, 9:11, 9:11] = 2                        # 2 mm spacing along x: the ring reaches 2 voxels in x
    attention = np.zeros(mask.shape)
    attention[10, 10, 10] = 3.0                       # in the tumour
    attention[10, 10, 12] = 1.0                       # 2 voxels = 4 mm from the tumour along x: in the ring
    attention[10, 10, 14] = 1.0                       # 8 mm away: outside
    assert attention_share(attention, mask, (1.0, 1.0, 2.0), ring_mm=5.0) == pytest.approx(4 / 5)
    assert attention_share(attention, mask, (1.0, 1.0, 2.0), ring_mm=0.0) == pytest.approx(3 / 5)
    assert attention_share(np.zeros(mask.shape), mask, (1, 1, 1)) is None
    assert attention_share(attention, np.ones_like(mask), (1, 1, 1)) is None   # no tumour
    with pytest.raises(ValueError, match="share a grid"):
        attention_share(attention[:-1], mask, (1, 1, 1))
