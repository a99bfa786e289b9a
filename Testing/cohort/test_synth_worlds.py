"""Cohort worlds: v1 kept byte for byte, v2 calibrated to the literature, the null world's PET blind to the latent
grade, and CT noise that follows the simulator's physics at every size."""

from __future__ import annotations

import hashlib
from unittest import mock

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.cli.main import build_parser, main
from reactkd.cohort.synth import SIZES, clinical, generate_case
from reactkd.cohort.synth.case import _organ_table, patient_anatomy
from reactkd.cohort.synth.tissues import Tissue
from reactkd.cohort.synth.worlds import WORLDS, get_world
from reactkd.errors import ConfigError
from reactkd.ldct import simulator

#: sha256 prefixes of v1 cases as the code before the worlds existed wrote them (commit d4ce371).
V1_CASES = {(3, 2, "small", None): "04c77f815f4af7cb", (21, 1, "small", 5): "7378090f76546604"}


def case_digest(case) -> str:
    digest = hashlib.sha256()
    for image in (case.ct, case.mask, case.pet_fdg, case.pet_act):
        digest.update(sitk.GetArrayViewFromImage(image).tobytes())
        digest.update(repr((image.GetOrigin(), image.GetSpacing(), image.GetDirection())).encode())
    return digest.hexdigest()[:16]


def array(image):
    return sitk.GetArrayFromImage(image)


@pytest.mark.parametrize("key", sorted(V1_CASES, key=str))
def test_world_v1_is_the_first_cohort_byte_for_byte(key):
    seed, label, size, patient = key
    assert case_digest(generate_case(seed, label, size, patient_seed=patient, world="v1")) == V1_CASES[key]


def test_each_world_is_deterministic_per_seed_and_worlds_differ():
    digests = {world: case_digest(generate_case(11, 1, world=world)) for world in WORLDS}
    assert digests == {world: case_digest(generate_case(11, 1, world=world)) for world in WORLDS}
    assert len(set(digests.values())) == len(WORLDS)
    assert case_digest(generate_case(12, 1)) != digests["v2"]


def test_the_null_world_changes_pet_only():
    """Same seed: the same CT and mask in v2 and null (the control differs in what PET knows, nothing else)."""
    pet_differs = []
    for seed in range(8, 12):
        v2, null = generate_case(seed, seed % 3), generate_case(seed, seed % 3, world="null")
        np.testing.assert_array_equal(array(v2.ct), array(null.ct))
        np.testing.assert_array_equal(array(v2.mask), array(null.mask))
        pet_differs.append(not (np.array_equal(array(v2.pet_fdg), array(null.pet_fdg))
                                and np.array_equal(array(v2.pet_act), array(null.pet_act))))
    assert any(pet_differs)


def _nodules(world: str, n: int = 3000):
    """(recorded grade, latent differentiation, FDG ratio, acetate ratio) of the nodules of n patients."""
    rows = []
    for patient in range(n):
        grade = patient % 3
        anatomy = patient_anatomy(10_000 + patient, grade, world)
        rows += [(grade, t.differentiation, t.fdg_ratio, t.act_ratio) for t in anatomy.tumours]
    return np.array(rows)


def test_pet_follows_the_latent_grade_in_v2_and_only_the_recorded_grade_in_the_null_world():
    for world, expect_signal in (("v2", True), ("null", False)):
        rows = _nodules(world)
        within = []
        for grade in range(3):  # rank correlation of uptake with the latent grade, inside one recorded grade
            g = rows[rows[:, 0] == grade]
            ranks = [np.argsort(np.argsort(v)) for v in (g[:, 1], np.log(g[:, 2]) - np.log(g[:, 3]))]
            within.append(np.corrcoef(*ranks)[0, 1])
        # about 700 nodules per grade: a correlation's standard error is about 0.04, their mean's 0.02
        if expect_signal:
            assert np.mean(within) > 0.07, (world, within)
        else:
            assert abs(np.mean(within)) < 0.05, (world, within)


def test_avidity_matches_the_published_sensitivity_by_size():
    """Park et al. 2008: FDG 27/48/93 %, acetate 32/78/95 % for 1-2, 2-5 and >= 5 cm (at moderate grade), and
    the draws follow the probability."""
    for tracer, table in (("fdg", clinical.FDG_AVIDITY), ("act", clinical.ACT_AVIDITY)):
        for diameter, expected in zip(clinical.AVIDITY_DIAMETER_CM, table):
            assert clinical.avidity_probability(tracer, diameter, 1.5) == pytest.approx(expected, abs=1e-9)
    assert clinical.avidity_probability("fdg", 3.2, 2.5) > clinical.avidity_probability("fdg", 3.2, 0.5)
    assert clinical.avidity_probability("act", 3.2, 2.5) < clinical.avidity_probability("act", 3.2, 0.5)
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    ratios = np.array([clinical.tumour_to_liver(rng, "fdg", 3.2, 1.5, 0.0) for _ in range(4000)])
    threshold = 1.25
    above = [norm.sf((np.log(threshold) - np.log(median)) / sd)
             for median, sd in (clinical.AVID_TO_LIVER["fdg"], clinical.NON_AVID_TO_LIVER)]
    expected = 0.48 * above[0] + 0.52 * above[1]
    assert np.mean(ratios > threshold) == pytest.approx(expected, abs=0.025)


def test_v2_has_one_portal_venous_phase_and_a_varied_parenchyma():
    anatomies = [patient_anatomy(200 + i, i % 3) for i in range(200)]
    steatotic = np.mean([a.steatosis_hu > 0 for a in anatomies])
    cirrhotic = np.mean([a.cirrhosis_hu > 0 for a in anatomies])
    assert abs(steatotic - clinical.STEATOSIS_P) < 0.1 and abs(cirrhotic - clinical.CIRRHOSIS_P) < 0.1
    rng = np.random.default_rng(1)
    plain = next(a for a in anatomies if a.steatosis_hu == 0)
    for _ in range(50):
        table = _organ_table(rng, get_world("v2"), plain)
        assert table[Tissue.AORTA] > table[Tissue.LIVER] > table[Tissue.MUSCLE]  # every organ in the same phase
        assert table[Tissue.KIDNEY] > table[Tissue.LIVER] and 80 < table[Tissue.LIVER] < 135
    foci = [t for a in anatomies for t in a.tumours if t.focus is not None]
    assert foci and all(np.cbrt(np.prod(t.axes)) >= clinical.FOCUS_MIN_RADIUS_MM for t in foci)
    assert all(t.focus.differentiation == t.differentiation for t in foci)  # the graded part is the worst


def _clean_and_noisy(seed: int, size: str):
    """A v2 case and the same case without its acquisition noise (the simulator replaced by the identity)."""
    case = generate_case(seed, seed % 3, size)
    with mock.patch.object(simulator, "simulate_low_dose", lambda ct, *args, **kwargs: ct.clone()):
        clean = generate_case(seed, seed % 3, size)
    return case, clean


@pytest.mark.parametrize("size", ["small", "clinical", pytest.param("full", marks=pytest.mark.slow)])
def test_simulate_ldct_adds_the_missing_variance_of_the_case_own_noise(size):
    """The issue's criterion: a dose-d simulation adds (1/d - 1) times the case's own full-dose noise variance
    (measured in the liver), within 20 %, on every size."""
    case, clean = _clean_and_noisy(4, size)
    liver = array(case.mask) == 1
    ct = array(case.ct).astype(np.float64)
    own = float((ct - array(clean.ct))[liver].var())
    assert own > 0.05, "the case carries acquisition noise"
    for dose in (0.5, 0.1):
        low = array(simulator.simulate_low_dose_image(case.ct, dose, seed=9, input_is_full_dose=True))
        added = float((low - ct)[liver].var())
        assert added / ((1 / dose - 1) * own) == pytest.approx(1.0, rel=0.2), (size, dose)


def test_bad_world_and_size_are_refused(capsys):
    with pytest.raises(ConfigError, match="unknown world"):
        generate_case(1, 1, world="v3")
    parser = build_parser()
    synth = parser._subparsers._group_actions[0].choices["synth"]
    choices = {action.dest: action.choices for action in synth._actions}
    assert set(choices["world"]) == set(WORLDS) and set(choices["size"]) == set(SIZES)
    for flag, value in (("--world", "v3"), ("--size", "huge")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["synth", "--out", "unused", flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")
