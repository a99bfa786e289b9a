"""`reactkd demo` prints the truth of its synthetic case beside the prediction, and where the model looked."""

from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from reactkd.cli.demo import truth_text
from reactkd.cohort.synth import generate_case


def _result(case, grade, cam):
    image = sitk.GetImageFromArray(cam.astype(np.float32))
    image.CopyInformation(case.ct)
    return SimpleNamespace(probabilities={"well": 0.2, "moderate": 0.3, "poor": 0.5}, grade=grade,
                           attention_gradcam=image)


def test_truth_text_names_the_true_grade_the_verdict_and_the_attention_share():
    case = generate_case(seed=3, label=2)
    tumour = sitk.GetArrayFromImage(case.mask) == 2
    names = ["well", "moderate", "poor"]
    text = truth_text(case, _result(case, names[case.true_label], tumour.astype(float)))
    assert f"true grade: {names[case.true_label]}" in text and "(right)" in text
    assert f"latent differentiation {case.differentiation:.2f}" in text
    assert "Grad-CAM mass inside the tumour + 5 mm ring: 1.00" in text
    wrong = names[(case.true_label + 1) % 3]
    assert "(wrong)" in truth_text(case, _result(case, wrong, np.ones(tumour.shape)))


def test_truth_text_says_when_the_recorded_grade_is_a_misreading():
    misread = next(c for c in (generate_case(seed=s, label=s % 3) for s in range(200)) if c.true_label != c.label)
    text = truth_text(misread, _result(misread, "poor", np.zeros(sitk.GetArrayViewFromImage(misread.mask).shape)))
    assert "recorded as" in text and "misreading" in text and "Grad-CAM" not in text


def test_demo_grades_its_case_with_the_shipped_student_and_looks_at_its_tumour(tmp_path, capsys):
    """`reactkd demo` end to end, and the issue's acceptance check on its case: CT alone, the right grade, and
    at least half of the Grad-CAM mass inside the tumour + 5 mm ring."""
    import json

    from reactkd.cli.demo import DEMO_GRADE, DEMO_SEED, DEMO_WORLD
    from reactkd.cli.main import main
    from reactkd.evaluation import attention_share
    from reactkd.images.readers import read_image

    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    case = generate_case(seed=DEMO_SEED, label=DEMO_GRADE, size="full", world=DEMO_WORLD)
    result = json.loads((tmp_path / "demo/result.json").read_text())
    assert result["inputs"] == ["ct"]
    assert result["grade"] == list(result["probabilities"])[case.true_label]
    assert f"predicted: {result['grade']} (right)" in printed
    for name in ("case/ct.nii.gz", "case/pet_fdg.nii.gz", "case/pet_act.nii.gz", "overview.png", "scene.mrb"):
        assert (tmp_path / "demo" / name).stat().st_size > 1000
    mask = read_image(tmp_path / "demo/case/mask.nii.gz")
    cam = sitk.GetArrayFromImage(read_image(tmp_path / "demo/attention_gradcam.nrrd"))  # a copy: the image is temporary
    share = attention_share(cam, sitk.GetArrayViewFromImage(mask), mask.GetSpacing()[::-1])
    assert share >= 0.5 and f"Grad-CAM mass inside the tumour + 5 mm ring: {share:.2f}" in printed
