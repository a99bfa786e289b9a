"""Did the package's temperature help on cases it was not chosen on? NLL, Brier and classwise ECE of a package's
CT-alone predictions with and without its temperature, on a cohort's cases (optionally a held-out fold), with
paired case-bootstrap intervals of the difference.

    python experiments/temperature_check.py --model REACTKD/reactkd/data/models/reactkd-demo-student \
        --manifest build/demo-model/cohort/manifest.csv --fold 0 --folds 3
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--fold", type=int)
    parser.add_argument("--folds", type=int)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()

    import torch

    from reactkd.cli.evaluate import predict, subset_inputs
    from reactkd.cohort.cache import cohort_cache_dir, load_cohort
    from reactkd.cohort.folds import PackageSplit
    from reactkd.cohort.manifest import read_manifest
    from reactkd.evaluation.metrics import brier_score
    from reactkd.evaluation.study import classwise_ece
    from reactkd.graph.settings import GraphSettings
    from reactkd.package.model_package import load_package
    from reactkd.preprocessing import PreprocessConfig
    from reactkd.temperature import nll, package_temperature, with_temperature

    package = load_package(args.model)
    meta = package.metadata
    records = read_manifest(args.manifest)
    if args.fold is not None:
        records = [records[i] for i in PackageSplit.of(meta).held_out(records, args.manifest)]
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]),
                         GraphSettings.from_metadata(meta.get("graph")), cache_dir=cohort_cache_dir(args.manifest))
    keep, images, available = subset_inputs(cohort, "ct")
    raw = predict(package.model, images, available, cohort.region_labels[keep], torch.device("cpu"))
    labels = cohort.labels.numpy()[keep.numpy()]
    temperature = package_temperature(meta)
    tempered = with_temperature(raw, temperature)

    def scores(y, p):
        return np.array([nll(y, p), brier_score(y, p), classwise_ece(y, p)])

    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(labels), (args.bootstrap, len(labels)))
    differences = np.array([scores(labels[i], tempered[i]) - scores(labels[i], raw[i]) for i in draws])
    out = {"model": args.model, "temperature": temperature, "n": int(len(labels)),
           "without": dict(zip(("nll", "brier", "ece_classwise"), scores(labels, raw).round(4).tolist())),
           "with": dict(zip(("nll", "brier", "ece_classwise"), scores(labels, tempered).round(4).tolist())),
           "difference_ci95": {name: np.percentile(differences[:, k], [2.5, 97.5]).round(4).tolist()
                               for k, name in enumerate(("nll", "brier", "ece_classwise"))}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
