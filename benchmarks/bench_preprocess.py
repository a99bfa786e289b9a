"""Preprocessing time of a full-size case (512 x 512 x ~150 CT with masks and both PETs) on this machine.

    .venv/bin/python benchmarks/bench_preprocess.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from reactkd.cohort.synth import generate_case
from reactkd.preprocessing import preprocess_case


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    case = generate_case(seed=2025, label=2, size="full")
    print(f"CT size {case.ct.GetSize()}, spacing {tuple(round(s, 3) for s in case.ct.GetSpacing())}")
    print("| inputs | median | min | runs |\n|---|---|---|---|")
    for name, pets in (("CT + mask", {}), ("CT + mask + FDG + acetate", {"pet_fdg": case.pet_fdg, "pet_act": case.pet_act})):
        preprocess_case(case.ct, case.mask, **pets)  # warm-up
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            preprocess_case(case.ct, case.mask, **pets)
            times.append(time.perf_counter() - start)
        print(f"| {name} | median {statistics.median(times):.3f} s | min {min(times):.3f} s | runs {args.runs} |")


if __name__ == "__main__":
    main()
