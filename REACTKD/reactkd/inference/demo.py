"""`reactkd demo`: a full-size synthetic PET/CT case classified end to end with the shipped model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io import write_image
from .classifier import Classifier
from .cli import summary_text
from .outputs import write_outputs

DEMO_SEED, DEMO_GRADE = 2025, 2


def run_demo(args: argparse.Namespace) -> Path:
    from ..synth import generate_case

    out = Path(args.out)
    start = time.perf_counter()
    case = generate_case(seed=DEMO_SEED, label=DEMO_GRADE, size="full")
    inputs = out / "case"
    for name in ("ct", "pet_fdg", "pet_act", "mask"):
        write_image(getattr(case, name), inputs / f"{name}.nii.gz")
    print(f"synthetic case (true grade: {DEMO_GRADE}, CT size {case.ct.GetSize()}) written to {inputs} "
          f"in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    classifier = Classifier(None, device=args.device)
    print(f"model {classifier.metadata['name']} loaded on {classifier.device} in {time.perf_counter() - start:.1f} s")
    # The shipped student is a CT model: the PETs are written for Slicer but the student reads the CT only.
    result = classifier.classify(case.ct, case.mask)
    write_outputs(result, out, case.ct, case.mask, case.pet_fdg, case.pet_act)
    print(summary_text(result, out))
    return out
