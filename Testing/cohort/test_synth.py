"""Synthetic dual-tracer PET/CT cohort: determinism, valid masks, geometry, files on disk, designed signal."""

from __future__ import annotations

import csv
import time
from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from reactkd.cohort.manifest import COLUMNS as MANIFEST_COLUMNS
from reactkd.cohort.synth import generate_case, write_cohort
from reactkd.cohort.synth.cohort import SYNTH_COLUMNS, plan_cohort
from reactkd.cohort.synth.signal import cross_validated_auc, pet_on_ct, tumour_features
from reactkd.errors import ConfigError
from reactkd.images.geometry import Geometry
from reactkd.images.readers import read_image

IMAGES = ("ct", "pet_fdg", "pet_act", "mask")
N_SIGNAL_CASES = 30


@pytest.fixture(scope="module")
def cases():
    """30 small cases of the default world (v2) with balanced grades, shared by the checks below."""
    started = time.perf_counter()
    generated = [generate_case(100 + i, i % 3) for i in range(N_SIGNAL_CASES)]
    print(f"\nsmall case generation: {(time.perf_counter() - started) / N_SIGNAL_CASES:.3f} s/case")
    return generated


@pytest.fixture(scope="module")
def v1_cases():
    """The same 30 cases in world v1, whose calibration (docs/synthetic-cohort.md, v1) these tests keep."""
    return [generate_case(100 + i, i % 3, world="v1") for i in range(N_SIGNAL_CASES)]


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_same_seed_same_case_other_seed_other_case():
    first, again, other = generate_case(7, 1), generate_case(7, 1), generate_case(8, 1)
    for name in IMAGES:
        assert Geometry.of(getattr(first, name)) == Geometry.of(getattr(again, name))
        np.testing.assert_array_equal(array(getattr(first, name)), array(getattr(again, name)))
    assert first.n_tumours == again.n_tumours
    assert not np.array_equal(array(first.ct), array(other.ct))
    assert Geometry.of(first.ct) != Geometry.of(other.ct)


def test_second_scan_of_a_patient_shows_the_same_tumours_elsewhere():
    scan_a = generate_case(21, 2, patient_seed=5)
    scan_b = generate_case(22, 2, patient_seed=5)
    assert scan_a.n_tumours == scan_b.n_tumours
    assert [t.suv_fdg / t.suv_act for t in scan_a.tumours] == pytest.approx(
        [t.suv_fdg / t.suv_act for t in scan_b.tumours], rel=0.5)  # liver background differs per session
    assert [t.radius_mm for t in scan_a.tumours] == [t.radius_mm for t in scan_b.tumours]
    assert Geometry.of(scan_a.ct) != Geometry.of(scan_b.ct)


@pytest.mark.parametrize("kwargs", [dict(seed=-1, label=0), dict(seed=1, label=3), dict(seed=1, label=True),
                                    dict(seed=1.5, label=0), dict(seed=1, label=0, size="huge")])
def test_generate_case_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        generate_case(**kwargs)


def test_masks_are_valid_label_maps_with_tumours_strictly_inside_the_liver(cases):
    for case in cases:
        mask = array(case.mask)
        assert case.mask.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(mask)) == {0, 1, 2}
        tumour = mask == 2
        touching = ndimage.binary_dilation(tumour, np.ones((3, 3, 3), bool))
        assert (mask[touching] > 0).all(), "a tumour voxel touches something other than liver"
        _, components = ndimage.label(tumour, np.ones((3, 3, 3), bool))
        assert 1 <= case.n_tumours <= 4 and components == case.n_tumours == len(case.tumours)
        assert sum(t.voxels for t in case.tumours) == tumour.sum()


def centroid_lps(image: sitk.Image, region: np.ndarray) -> np.ndarray:
    index_zyx = np.argwhere(region).mean(axis=0)
    return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in index_zyx[::-1])))


def test_truth_and_anatomy_sit_where_they_belong_in_physical_space(cases):
    for case in cases:
        mask, ct = array(case.mask), array(case.ct)
        labels, n = ndimage.label(mask == 2, np.ones((3, 3, 3), bool))
        centroids = [centroid_lps(case.ct, labels == k) for k in range(1, n + 1)]
        for truth in case.tumours:
            assert min(np.linalg.norm(c - truth.centre_lps) for c in centroids) < 2.0
        # Whatever the storage flips, the liver lies on the patient's right (LPS x below the body's centre).
        assert centroid_lps(case.ct, mask == 1)[0] < centroid_lps(case.ct, ct > -500)[0] - 20


def test_ct_looks_like_an_abdomen(cases):
    for case in cases:
        ct, mask = array(case.ct), array(case.mask)
        assert ct.dtype == np.float32 and case.ct.GetSize() == (96, 96, 48)
        assert 40 < np.median(ct[mask == 1]) < 140                    # liver parenchyma (portal venous)
        assert np.median(ct[:, :3, :3]) < -950                       # air in the corners
        assert ct.max() > 400                                        # spine
        body = ct > -500
        assert 0.2 < body.mean() < 0.8


def test_pet_lies_on_a_coarser_grid_overlapping_the_ct(cases):
    for case in cases:
        ct, pet = Geometry.of(case.ct), Geometry.of(case.pet_fdg)
        assert Geometry.of(case.pet_act) == pet
        assert pet.direction == ct.direction and pet.origin != ct.origin and pet.size != ct.size
        assert all(p > c for p, c in zip(pet.spacing, ct.spacing))
        corners = [(i, j, k) for i in (0, ct.size[0] - 1) for j in (0, ct.size[1] - 1) for k in (0, ct.size[2] - 1)]
        for corner in corners:
            index = case.pet_fdg.TransformPhysicalPointToContinuousIndex(case.ct.TransformIndexToPhysicalPoint(corner))
            assert all(-0.5 <= v <= n - 0.5 for v, n in zip(index, pet.size))


def test_pet_resampled_in_physical_space_matches_the_ct_anatomy(cases):
    for case in cases[::2]:  # half of them: every orientation kind still occurs
        ct, mask = array(case.ct), array(case.mask)
        liver_core = ndimage.binary_erosion(mask == 1, iterations=2)
        for pet in (pet_on_ct(case.pet_fdg, case.ct), pet_on_ct(case.pet_act, case.ct)):
            assert pet.min() >= 0
            assert pet[ct < -950].mean() < 0.2                       # air outside the body
            assert 1.2 < np.median(pet[liver_core]) < 4.2             # liver background SUV
        hot = [t for t in case.tumours if t.suv_fdg > 6 and t.voxels > 100]
        if hot:  # an avid nodule shows up where the CT mask puts the tumour
            fdg = pet_on_ct(case.pet_fdg, case.ct)
            assert fdg[mask == 2].mean() > 1.3 * np.median(fdg[liver_core])


def test_geometry_metadata_is_realistic_and_varied(cases):
    geometries = [Geometry.of(case.ct) for case in cases]
    assert all(np.abs(g.origin).min() > 1 for g in geometries)
    assert all(g.spacing[2] != g.spacing[0] for g in geometries)
    directions = [np.reshape(g.direction, (3, 3)) for g in geometries]
    assert all(np.allclose(d @ d.T, np.eye(3)) for d in directions)
    assert any(not np.allclose(d, np.eye(3)) for d in directions)
    assert any(np.abs(d - np.diag(np.diag(d))).max() > 0.05 for d in directions), "no oblique case"


def test_designed_signal_pet_separates_grades_better_than_ct(v1_cases):
    labels = np.array([case.label for case in v1_cases])
    features = [tumour_features(case) for case in v1_cases]
    ct_auc = cross_validated_auc(np.array([f[0] for f in features]), labels)
    pet_auc = cross_validated_auc(np.array([f[1] for f in features]), labels)
    print(f"\n{len(v1_cases)} v1 cases: CT macro AUC {ct_auc:.3f}, PET macro AUC {pet_auc:.3f}")
    assert pet_auc > 0.85
    assert ct_auc < pet_auc


def test_calibrated_signal_matches_the_paper_on_a_fresh_cohort():
    """The calibration target of docs/synthetic-cohort.md, on 150 cases of seeds nothing was tuned on: the
    oracle reaches a CT macro AUC of 0.80-0.87 and a PET/CT one of 0.90-0.95 (a margin of 0.04 either side for
    the smaller sample), and about one recorded grade in six is a misreading."""
    labels = np.arange(150) % 3
    cohort = [generate_case(900_000 + i, int(label), world="v1") for i, label in enumerate(labels)]
    features = [tumour_features(case) for case in cohort]
    ct = np.array([f[0] for f in features])
    ct_auc = cross_validated_auc(ct, labels)
    pet_ct_auc = cross_validated_auc(np.hstack([ct, np.array([f[1] for f in features])]), labels)
    truth = np.array([case.true_label for case in cohort])
    print(f"\n150 fresh cases: CT {ct_auc:.3f}, PET/CT {pet_ct_auc:.3f}, misread {np.mean(truth != labels):.1%}")
    assert 0.76 <= ct_auc <= 0.91 and 0.86 <= pet_ct_auc <= 0.99 and ct_auc < pet_ct_auc
    assert 0.05 <= np.mean(truth != labels) <= 0.30
    assert np.all(np.abs(truth - labels) <= 1), "a misreading is off by one grade, never two"


def test_latent_differentiation_drives_ct_and_pet():
    from reactkd.cohort.synth.anatomy import grade_property

    assert grade_property((1.0, 2.0, 4.0), 0.5) == 1.0 and grade_property((1.0, 2.0, 4.0), 2.0) == 3.0
    assert grade_property((1.0, 2.0, 4.0), 0.0) == 0.5  # extrapolated below the first grade centre
    cohort = [generate_case(500 + i, i % 3, world="v1") for i in range(60)]
    nodules = [t for case in cohort for t in case.tumours]
    latent = np.array([t.differentiation for t in nodules])
    for value in ([t.suv_fdg for t in nodules], [-t.suv_act for t in nodules], [t.radius_mm for t in nodules]):
        assert np.corrcoef(np.argsort(np.argsort(latent)), np.argsort(np.argsort(value)))[0, 1] > 0.3
    patient = np.array([case.differentiation for case in cohort])
    assert all(abs(t.differentiation - case.differentiation) < 1.0 for case in cohort for t in case.tumours)
    assert np.all(np.diff([patient[np.arange(60) % 3 == g].mean() for g in range(3)]) > 0.7)


def test_uptake_follows_grade(v1_cases):
    fdg = {g: np.median([t.suv_fdg for c in v1_cases if c.label == g for t in c.tumours]) for g in range(3)}
    act = {g: np.median([t.suv_act for c in v1_cases if c.label == g for t in c.tumours]) for g in range(3)}
    assert fdg[0] < fdg[1] < fdg[2] and act[0] > act[1] > act[2]
    assert 1.5 < min(fdg.values()) and max(fdg.values()) < 15


def test_plan_is_balanced_with_repeat_patients_and_missing_pet():
    for n in (1, 2, 3, 4, 7, 30, 90):
        plan = plan_cohort(n, seed=3)
        assert len(plan) == n and len({c.case_id for c in plan}) == n
        counts = Counter(c.label for c in plan)
        assert max(counts.values()) - min(counts.get(g, 0) for g in range(3)) <= 1
        by_patient: dict[str, list] = {}
        for c in plan:
            by_patient.setdefault(c.patient_id, []).append(c)
        for scans in by_patient.values():
            assert len({(s.label, s.patient_seed) for s in scans}) == 1
            assert len({s.seed for s in scans}) == len(scans)
        if n >= 4:
            assert any(len(scans) == 2 for scans in by_patient.values())
            assert any(not c.has_fdg and c.has_act for c in plan) and any(not c.has_act and c.has_fdg for c in plan)
    plan = plan_cohort(90, seed=3)
    missing_fdg, missing_act = sum(not c.has_fdg for c in plan), sum(not c.has_act for c in plan)
    assert 5 <= missing_fdg <= 13 and 9 <= missing_act <= 18
    assert sum(not (c.has_fdg or c.has_act) for c in plan) <= 3
    assert plan_cohort(90, seed=3) == plan and plan_cohort(90, seed=4) != plan


@pytest.mark.parametrize("kwargs", [dict(n_cases=0), dict(n_cases=2, size="medium"), dict(n_cases=2, seed=-3),
                                    dict(n_cases="3")])
def test_write_cohort_refuses_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        write_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_write_cohort_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        write_cohort(tmp_path / "file", 1)


def test_written_cohort_rereads_with_exact_geometry(tmp_path):
    calls = []
    manifest = write_cohort(tmp_path / "cohort", 4, seed=2, progress=lambda done, total: calls.append((done, total)))
    assert manifest == tmp_path / "cohort" / "manifest.csv"
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == SYNTH_COLUMNS and SYNTH_COLUMNS[:len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS
    assert len(rows) == 4 and {(row["world"], row["cohort_version"]) for row in rows} == {("v2", "2")}
    plan = {c.case_id: c for c in plan_cohort(4, seed=2)}
    assert any(row["pet_fdg"] == "" for row in rows) and any(row["pet_act"] == "" for row in rows)
    for row in rows:
        planned = plan[row["case_id"]]
        assert int(row["label"]) == planned.label and row["patient_id"] == planned.patient_id
        assert (row["pet_fdg"] != "", row["pet_act"] != "") == (planned.has_fdg, planned.has_act)
    for row in [r for r in rows if "" in (r["pet_fdg"], r["pet_act"])][:1] + [r for r in rows if "" not in r.values()][:1]:
        planned = plan[row["case_id"]]  # regenerating costs time: one case with and one without both PETs
        case = generate_case(planned.seed, planned.label, patient_seed=planned.patient_seed)
        for name in IMAGES:
            if row[name] == "":
                assert not (manifest.parent / row["case_id"] / f"{name}.nii.gz").exists()
                continue
            assert not row[name].startswith("/") and row[name] == f"{row['case_id']}/{name}.nii.gz"
            image = read_image(manifest.parent / row[name])
            if name == "ct":  # v2's small CTs keep their sub-HU noise: float32, exactly
                assert sitk.ReadImage(str(manifest.parent / row[name])).GetPixelID() == sitk.sitkFloat32
            written, original = Geometry.of(image), Geometry.of(getattr(case, name))
            assert written.size == original.size
            assert written.spacing == original.spacing and written.origin == original.origin
            np.testing.assert_allclose(written.direction, original.direction, atol=1e-6)
            np.testing.assert_array_equal(array(image), array(getattr(case, name)).astype(np.float32))
