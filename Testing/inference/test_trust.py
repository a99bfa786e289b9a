"""How far to trust one answer: the prediction set, the modality what-if and the segmentation warnings in
`classify`'s result (Classifier, result.json, the printed summary, the batch table)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model_packages import make_package
from reactkd.cli.main import main
from reactkd.cohort.synth import generate_case
from reactkd.conformal import REFER, ConformalCalibration
from reactkd.images.writers import write_image
from reactkd.inference.classifier import Classifier
from reactkd.inference.input_checks import MIN_TUMOUR_GRID_VOXELS, segmentation_warnings
from reactkd.inference.what_if import what_if_probabilities, what_if_subsets
from reactkd.preprocessing import PreprocessConfig, preprocess_case


def calibration(scores_per_grade, level=0.9) -> dict:
    return {**ConformalCalibration(level, tuple(tuple(sorted(s)) for s in scores_per_grade)).to_dict(),
            "calibrated_on": "test", "notes": []}


#: 19 scores per grade from 0.05 to 0.95: at 90 % a grade enters when 1 - p reaches the second largest, 0.9.
SPREAD = calibration([np.linspace(0.05, 0.95, 19)] * 3)
#: Every calibration score tiny: a grade enters only when its probability is near 1, so sets are single grades.
SHARP = calibration([np.full(19, 1e-4)] * 3)


@pytest.fixture(scope="module")
def case():
    return generate_case(3, 2, size="small")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return {"plain": make_package(root / "plain"), "spread": make_package(root / "spread", extra_metadata={
        "conformal": SPREAD}), "sharp": make_package(root / "sharp", extra_metadata={"conformal": SHARP}),
        "unavailable": make_package(root / "unavailable", extra_metadata={
            "conformal": {"unavailable": "no calibration case of grade 2"}})}


def test_a_calibrated_package_gives_a_set_in_plain_words(case, packages):
    wide = Classifier(packages["spread"], device="cpu").classify(case.ct, case.mask)
    assert wide.prediction_set_level == 0.9
    # An untrained network gives every grade about 1/3: 1 - p ~ 0.67 is below 0.9, so all three grades enter.
    assert wide.prediction_set == ["well", "moderate", "poor"]
    assert wide.prediction_set_text == f"{REFER} (well, moderate or poor, 90 % set)"
    sharp = Classifier(packages["sharp"], device="cpu").classify(case.ct, case.mask)
    assert sharp.prediction_set == [sharp.grade]  # never empty: the most probable grade
    assert sharp.prediction_set_text == f"{sharp.grade}, 90 % set"


def test_the_level_can_be_chosen_and_a_level_outside_0_1_is_refused(case, packages):
    # At 20 % a grade's p-value (#{scores >= 1 - p} + 1) / 20 must reach 0.8: 1 - p <= 0.25, which p ~ 1/3 misses.
    # The set would be empty, so it is the most probable grade.
    low = Classifier(packages["spread"], device="cpu", set_level=0.2).classify(case.ct, case.mask)
    assert low.prediction_set_level == 0.2 and low.prediction_set == [low.grade]
    for level in (0, 1, 1.5, -0.1):
        with pytest.raises(Exception, match="strictly between 0 and 1"):
            Classifier(packages["spread"], device="cpu", set_level=level)


def test_a_package_without_calibration_still_classifies_and_says_why(case, packages):
    for name, reason in (("plain", "trained before prediction sets existed"),
                         ("unavailable", "no calibration case of grade 2")):
        result = Classifier(packages[name], device="cpu").classify(case.ct, case.mask)
        assert result.prediction_set is None and result.prediction_set_level is None
        assert result.prediction_set_text.startswith("no prediction set") and reason in result.prediction_set_text


def test_result_json_summary_and_a_bad_level_on_the_command_line(case, packages, tmp_path, capsys):
    for name in ("ct", "mask"):
        write_image(getattr(case, name), tmp_path / f"{name}.nii.gz")
    inputs = ["--ct", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"), "--no-render"]
    assert main(["classify", *inputs, "--model", str(packages["spread"]), "--out", str(tmp_path / "out")]) in (0, None)
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["prediction_set"] == ["well", "moderate", "poor"] and result["prediction_set_level"] == 0.9
    assert f"prediction set: {REFER}" in printed
    # The test student reads PET too; this case gives CT alone: nothing to compare, and the missing PET named.
    assert result["what_if"] == {"unavailable": "this case has only one input combination this model reads",
                                 "missing_modalities": ["pet_fdg", "pet_act"]}
    assert "not given (the model reads them): pet_fdg, pet_act" in printed
    code = main(["classify", *inputs, "--model", str(packages["spread"]), "--out", str(tmp_path / "bad"),
                 "--set-level", "1.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "between 0 and 1" in err and not (tmp_path / "bad").exists()


def test_what_if_grades_every_available_subset_in_one_batch_as_it_would_alone(case, tmp_path):
    package = make_package(tmp_path / "pet-student", in_channels=3, extra_metadata={"conformal": SPREAD})
    result = Classifier(package, device="cpu").classify(case.ct, case.mask, pet_fdg=case.pet_fdg)
    rows = {row["inputs"]: row for row in result.what_if["rows"]}
    assert list(rows) == ["ct", "ct+fdg"] and result.what_if["missing_modalities"] == ["pet_act"]
    assert rows["ct+fdg"]["probabilities"] == pytest.approx(result.probabilities, abs=1e-5)  # the answer's inputs
    classifier = Classifier(package, device="cpu")
    prepared = preprocess_case(case.ct, case.mask, case.pet_fdg, None,
                               PreprocessConfig.from_dict(classifier.metadata["preprocessing"]))
    from reactkd.graph import head_region_labels
    from reactkd.inference.region_graph import case_regions

    regions = torch.from_numpy(head_region_labels(case_regions(prepared, classifier.graph_settings)))[None]
    images = torch.from_numpy(prepared.images)[None]
    batched = what_if_probabilities(classifier.model, images, regions, ["ct", "ct+fdg"])
    alone = what_if_probabilities(classifier.model, images, regions, ["ct"])
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)
    assert batched[1] == pytest.approx(list(result.probabilities.values()), abs=1e-5)


def test_what_if_subsets_follow_the_model_and_the_case():
    student = {"architecture": "student", "input_modalities": ["ct", "pet_fdg", "pet_act"]}
    sf = {"architecture": "sf_teacher", "input_modalities": ["ct", "pet_fdg", "pet_act"]}
    ct_only = {"architecture": "student", "input_modalities": ["ct"]}
    every = np.array([True, True, True])
    assert what_if_subsets(student, every) == (["ct", "ct+fdg", "ct+act", "all"], [], None)
    assert what_if_subsets(sf, every)[0] == ["ct+fdg", "ct+act", "all"]  # the SF teacher needs a PET
    assert what_if_subsets(sf, np.array([True, True, False])) == (
        [], ["pet_act"], "this case has only one input combination this model reads")
    assert what_if_subsets(ct_only, every) == ([], [], "this model reads CT alone")


def test_segmentation_warnings_name_a_tiny_tumour_and_an_implausible_liver(case):
    config = PreprocessConfig(grid=(16, 32, 32))
    mask = sitk.GetArrayFromImage(case.mask)
    prepared = preprocess_case(case.ct, case.mask, None, None, config)
    spacing = case.mask.GetSpacing()
    volume_ml = np.count_nonzero(mask) * np.prod(spacing) / 1000
    assert not [w for w in segmentation_warnings(prepared, mask, spacing) if "tumour" in w]
    # The same mask read with voxels a tenth as long in each axis holds 1/1000 of the volume: no liver is that small.
    assert any(f"{volume_ml / 1000:.0f} mL" in w and "adult liver" in w
               for w in segmentation_warnings(prepared, mask, tuple(s / 10 for s in spacing)))
    small = mask.copy()
    small[small == 2] = 1
    z, y, x = np.argwhere(mask > 0).mean(axis=0).astype(int)
    small[z, y, x] = 2  # one native voxel of tumour: far below one grid voxel
    image = sitk.GetImageFromArray(small)
    image.CopyInformation(case.mask)
    tiny = preprocess_case(case.ct, image, None, None, config, require_tumour=False)
    found = segmentation_warnings(tiny, small, spacing)
    assert any("lost on it" in w for w in found) or any(f"fewer than {MIN_TUMOUR_GRID_VOXELS}" in w for w in found)


def test_a_liver_in_many_pieces_is_named(case):
    config = PreprocessConfig(grid=(16, 32, 32))
    prepared = preprocess_case(case.ct, case.mask, None, None, config)
    pieces = prepared.label_map.copy()
    pieces[:, :, ::8] = 0  # cut the organ into slabs along x
    broken = type(prepared)(**{**prepared.__dict__, "label_map": pieces})
    assert any("separate pieces" in w for w in segmentation_warnings(broken, sitk.GetArrayFromImage(case.mask),
                                                                     case.mask.GetSpacing()))


def test_batch_table_has_the_set_and_the_warnings(case, packages, tmp_path):
    folder = tmp_path / "cases" / "c1"
    folder.mkdir(parents=True)
    for name in ("ct", "mask"):
        write_image(getattr(case, name), folder / f"{name}.nii.gz")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,ct,mask\nc1,cases/c1/ct.nii.gz,cases/c1/mask.nii.gz\n")
    out = tmp_path / "batch"
    assert main(["classify", "--manifest", str(manifest), "--model", str(packages["spread"]), "--out", str(out),
                 "--no-render", "--progress", "none"]) in (0, None)
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["prediction_set"] == "well or moderate or poor" and row["prediction_set_level"] == "0.9"
    assert row["refer"] == "yes" and "warnings" in row
    # Another level grades again (a kept row would carry the old level's set).
    assert main(["classify", "--manifest", str(manifest), "--model", str(packages["spread"]), "--out", str(out),
                 "--no-render", "--progress", "none", "--set-level", "0.01"]) in (0, None)
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["prediction_set_level"] == "0.01" and row["refer"] == "no"


def test_the_input_profile_scores_every_case_and_warns_outside_it(case, tmp_path):
    from reactkd.graph import head_region_labels
    from reactkd.inference.region_graph import case_regions
    from reactkd.models.base import pooled_features
    from reactkd.ood import build_profile

    plain = Classifier(make_package(tmp_path / "plain"), device="cpu")
    feats = []
    for seed in range(6):
        other = generate_case(seed, seed % 3, size="small")
        prepared = preprocess_case(other.ct, other.mask, None, None, plain.preprocess)
        regions = torch.from_numpy(head_region_labels(case_regions(prepared, plain.graph_settings)))[None]
        with torch.no_grad():
            out = plain.model(torch.from_numpy(prepared.images)[None], torch.from_numpy(prepared.available)[None],
                              regions)
        feats.append(pooled_features(out.features)[0].numpy())
    spacing = case.ct.GetSpacing()
    profile = build_profile(np.stack(feats[:4]), np.stack(feats[4:]), np.array([spacing] * 4), components=3)
    package = make_package(tmp_path / "profiled", extra_metadata={"input_profile": profile.to_dict()})
    result = Classifier(package, device="cpu").classify(case.ct, case.mask)
    assert set(result.out_of_distribution) == {"score", "threshold", "flagged"}
    assert result.out_of_distribution["threshold"] == pytest.approx(profile.threshold, abs=1e-3)
    strict = make_package(tmp_path / "strict", extra_metadata={"input_profile": {**profile.to_dict(), "threshold": 0.0}})
    flagged = Classifier(strict, device="cpu").classify(case.ct, case.mask)
    assert flagged.out_of_distribution["flagged"] and any("unlike the training cases" in w for w in flagged.warnings)
    thick_ct, thick_mask = sitk.Image(case.ct), sitk.Image(case.mask)
    for image in (thick_ct, thick_mask):
        image.SetSpacing((spacing[0], spacing[1], spacing[2] * 3))
    thick = Classifier(package, device="cpu").classify(thick_ct, thick_mask)
    assert any(w.startswith("slice thickness") for w in thick.warnings)
    assert "unavailable" in plain.classify(case.ct, case.mask).out_of_distribution  # packages from before
