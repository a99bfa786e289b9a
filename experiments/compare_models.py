"""Paired comparison of two model packages on the same held-out cases: macro AUC of each and of their
difference (B minus A) with a paired bootstrap CI.

    python experiments/compare_models.py --manifest build/demo-model/cohort/manifest.csv --fold 0 \
        --model-a build/pet-percentile/teacher-sf --model-b build/demo-model/teacher-sf --modalities all

Cases: the fold's test part (``--fold``; the split seed is model A's training seed), each model with its own
preprocessing, on the modality subset given (``all`` for PET/CT teachers, ``ct`` for CT models); a PET/CT
teacher is scored on the cases that have a PET, as ``reactkd evaluate`` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reactkd.evaluation.cli import predict, subset_inputs
from reactkd.evaluation.metrics import paired_macro_auc_difference
from reactkd.manifest import read_manifest
from reactkd.packaging import load_package
from reactkd.preprocessing import PreprocessConfig
from reactkd.training.config import GraphConfig
from reactkd.training.data import load_cohort
from reactkd.training.folds import split_fold


def probabilities(model_dir: Path, records, subset: str, cache_dir: Path):
    package = load_package(model_dir)
    meta = package.metadata
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]), GraphConfig(**meta["graph"]),
                         cache_dir=cache_dir)
    keep, images, available = subset_inputs(cohort, subset)
    if meta["architecture"] == "sf_teacher":  # as `reactkd evaluate`: a PET/CT model is scored where PET exists
        has_pet = available[:, 1:].any(dim=1)
        keep, images, available = keep[has_pet], images[has_pet], available[has_pet]
    probs = predict(package.model, images, available, cohort.region_labels[keep], torch.device("cpu"))
    return keep.numpy(), cohort.labels.numpy()[keep.numpy()], probs, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--model-a", type=Path, required=True)
    parser.add_argument("--model-b", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--modalities", default="ct", choices=("ct", "ct+fdg", "ct+act", "all"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    records = read_manifest(args.manifest)
    seed = load_package(args.model_a).metadata["training"]["config"]["seed"]
    _, test = split_fold(records, args.fold, args.folds, seed=seed)
    records = [records[i] for i in test]
    cache = args.manifest.resolve().parent / ".reactkd-cache"
    keep_a, labels, probs_a, _ = probabilities(args.model_a, records, args.modalities, cache)
    keep_b, labels_b, probs_b, _ = probabilities(args.model_b, records, args.modalities, cache)
    if (keep_a != keep_b).any() or (labels != labels_b).any():
        raise SystemExit("the two models were scored on different cases")
    print(json.dumps(paired_macro_auc_difference(labels, probs_a, probs_b, args.bootstrap), indent=1))


if __name__ == "__main__":
    main()
