"""Learning-rate sweep: can each network memorise a balanced handful of cases, and at which peak rate?

Uses the real training loop (warm-up + cosine, balanced batches) through ``reactkd.training.sanity.overfit``
on cases of a synthetic cohort, preprocessed with the given config, and prints a markdown table of the
training loss before and after, and the training accuracy.

    python experiments/lr_sweep.py --manifest build/cohort240/manifest.csv \
        --config REACTKD/reactkd/configs/demo.yaml --rates 1e-4 3e-4 1e-3 --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from reactkd.cohort.cache import load_cohort
from reactkd.cohort.manifest import read_manifest
from reactkd.training.config import load_config
from reactkd.training.sanity import balanced_subset, overfit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--stages", nargs="+", default=["student", "teacher-sf", "teacher-dose"])
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    config = load_config(args.config)
    records = read_manifest(args.manifest)
    cache_dir = args.manifest.resolve().parent / ".reactkd-cache"
    cohort = load_cohort(records, config.preprocess_config(), config.graph, cache_dir=cache_dir)
    if "teacher-dose" in args.stages:  # its inputs: each case's cached degraded CTs
        import torch

        from reactkd.cohort.doses import load_dose_cache

        cohort.dose_ct = torch.from_numpy(load_dose_cache(records, config.preprocess_config(), config.doses,
                                                          cohort.key, cache_dir))
    indices = balanced_subset(cohort.labels.numpy(), args.per_class)
    print("| stage | peak lr | steps | first-epoch loss | final loss | training accuracy | time s |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        for rate in args.rates:
            start = time.perf_counter()
            report = overfit(stage, cohort, indices, dataclasses.replace(config, learning_rate=rate, teacher_learning_rate=rate), args.epochs)
            print(f"| {stage} | {rate:g} | {report.steps} | {report.first_loss:.3f} | {report.final_loss:.3f} | "
                  f"{report.accuracy:.2f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
