"""`reactkd demo`: a full-size synthetic PET/CT case classified end to end with the shipped model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reactkd.cli.classify import summary_text
from reactkd.images.writers import write_image
from reactkd.inference.classifier import Classifier
from reactkd.inference.outputs import write_outputs

DEMO_SEED, DEMO_GRADE = 2025, 2
#: The world the shipped packages were trained on (`make train-demo`).
DEMO_WORLD = "v2"


def run_demo(args: argparse.Namespace) -> Path:
    from reactkd.cohort.synth import generate_case
    from reactkd.output_paths import check_output

    out = Path(args.out)
    check_output(out, folder=True)
    start = time.perf_counter()
    case = generate_case(seed=DEMO_SEED, label=DEMO_GRADE, size="full", world=DEMO_WORLD)
    inputs = out / "case"
    for name in ("ct", "pet_fdg", "pet_act", "mask"):
        write_image(getattr(case, name), inputs / f"{name}.nii.gz")
    print(f"synthetic case (CT size {case.ct.GetSize()}) written to {inputs} in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    classifier = Classifier(None, device=args.device)
    print(f"model {classifier.metadata['name']} loaded on {classifier.device} in {time.perf_counter() - start:.1f} s")
    # The shipped student is a CT model: the PETs are written for Slicer but the student reads the CT only.
    result = classifier.classify(case.ct, case.mask)
    write_outputs(result, out, case.ct, case.mask, case.pet_fdg, case.pet_act)
    print(summary_text(result, out))
    print(truth_text(case, result))
    return out


def truth_text(case, result) -> str:
    """What the synthetic case really is, beside what the model said, and where the model looked."""
    import SimpleITK as sitk

    from reactkd.evaluation import attention_share

    names = list(result.probabilities)
    recorded, true = names[case.label], names[case.true_label]
    reading = "" if recorded == true else f" (recorded as {recorded}: a misreading the cohort simulates)"
    verdict = "right" if result.grade == true else "wrong"
    lines = [f"true grade: {true}{reading}, latent differentiation {case.differentiation:.2f} on 0-3; "
             f"predicted: {result.grade} ({verdict})"]
    if result.attention_gradcam is not None:
        share = attention_share(sitk.GetArrayViewFromImage(result.attention_gradcam),
                                sitk.GetArrayViewFromImage(case.mask), case.ct.GetSpacing()[::-1])
        if share is not None:
            lines.append(f"Grad-CAM mass inside the tumour + 5 mm ring: {share:.2f}")
    return "\n".join(lines)
