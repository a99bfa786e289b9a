"""What the Slicer module's persistent inference process costs and saves, on a full-size CT.

Three ways to classify the same 512 x 512 x ~150 synthetic CT with its label map, interleaved, medians:
- in-process: `Classifier.classify` in this process, model already loaded (the floor: no transfer at all);
- warm process: `InferenceProcess.submit` to a `reactkd serve` child that already holds the model (what every
  Classify after the first costs in Slicer: the volumes passed as raw buffers in /dev/shm, the map boxes
  returned the same way and pasted onto the CT grid);
- cold process: a new child per request (start Python, import torch, load the model), i.e. what a
  process-per-click design (or `reactkd classify` per case) would cost each time.
Reported: the milliseconds of each; the hop (warm - in-process, target at most 100 ms) and warm / in-process,
from the same interleaved run; cold / warm (``--cold-runs 0`` skips the cold runs).

    .venv/bin/python benchmarks/bench_inference_process.py --model REACTKD/reactkd/data/models/reactkd-demo-student
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as every reactkd process (cli.main)
ROOT = Path(__file__).resolve().parent.parent
HOP_TARGET_MS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "REACTKD/reactkd/data/models/reactkd-demo-student")
    parser.add_argument("--runs", type=int, default=3, help="timed warm runs (and in-process runs), median")
    parser.add_argument("--cold-runs", type=int, default=2, help="timed cold runs, median")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()

    from bench_classify import machine_description

    from reactkd.cohort.synth import generate_case
    from reactkd.inference.classifier import Classifier
    from reactkd.inference.client import InferenceProcess

    case = generate_case(args.seed, 2, size="full")
    inputs = {"ct": case.ct, "mask": case.mask, "pet_fdg": None, "pet_act": None}
    command = [sys.executable, "-m", "reactkd", "serve"]
    classifier = Classifier(args.model, device=args.device)
    warm = InferenceProcess(command=command)
    timings: dict[str, list[float]] = {"in-process": [], "warm process": [], "cold process": []}

    def timed(kind: str, action) -> None:
        start = time.perf_counter()
        result = action()
        timings[kind].append((time.perf_counter() - start) * 1000)
        assert abs(sum(result.probabilities.values()) - 1) < 1e-4

    def cold():
        process = InferenceProcess(command=command)
        try:
            return process.classify(inputs, args.model, args.device, timeout=600)
        finally:
            process.shutdown()

    try:
        classifier.classify(case.ct, case.mask)  # warm-up both: first calls allocate and compile
        warm.classify(inputs, args.model, args.device, timeout=600)
        for run in range(max(args.runs, args.cold_runs)):
            if run < args.runs:
                timed("in-process", lambda: classifier.classify(case.ct, case.mask))
                timed("warm process", lambda: warm.classify(inputs, args.model, args.device, timeout=600))
            if run < args.cold_runs:
                timed("cold process", cold)
    finally:
        warm.shutdown()
    medians = {kind: statistics.median(values) for kind, values in timings.items() if values}
    print(f"persistent inference process, CT {' x '.join(map(str, case.ct.GetSize()))}, model {args.model.name}, "
          f"device {args.device}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine_description()}\n")
    print("| way | median ms | runs |\n|---|---|---|")
    for kind, values in timings.items():
        if values:
            print(f"| {kind} | {medians[kind]:.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
    hop = medians["warm process"] - medians["in-process"]
    print(f"\ninference hop (warm process - in-process): {hop:+.0f} ms (target <= {HOP_TARGET_MS} ms: "
          f"{'met' if hop <= HOP_TARGET_MS else 'NOT met'}); warm / in-process = "
          f"{medians['warm process'] / medians['in-process']:.2f}x")
    if "cold process" in medians:
        print(f"cold / warm = {medians['cold process'] / medians['warm process']:.1f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
