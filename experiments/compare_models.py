"""Paired comparison of two model packages on the same held-out cases: macro AUC of each and of their
difference (B minus A) with a paired bootstrap CI.

    python experiments/compare_models.py --manifest build/demo-model/cohort/manifest.csv --fold 0 \
        --model-a build/pet-percentile/teacher-sf --model-b build/demo-model/teacher-sf --modalities all

Cases: the fold's test part (``--fold``; the split seed is model B's training seed), each model with its own
preprocessing, on the modality subset given (``all`` for PET/CT teachers, ``ct`` for CT models); a PET/CT
teacher is scored on the cases that have a PET, as ``reactkd evaluate`` does.

``--model-a handcrafted`` is the simple baseline on the same split: multinomial logistic regression on the
hand-made CT tumour features of ``reactkd.cohort.synth.signal`` (``--modalities ct``), fitted on the fold's training part (the cases model B trained and selected on), scored on its test part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reactkd.cli.evaluate import predict, subset_inputs
from reactkd.cohort.cache import load_cohort
from reactkd.cohort.folds import split_fold
from reactkd.cohort.manifest import read_manifest
from reactkd.evaluation.metrics import paired_macro_auc_difference
from reactkd.graph.settings import GraphSettings
from reactkd.package.model_package import load_package
from reactkd.preprocessing import PreprocessConfig


def probabilities(model_dir: Path, records, subset: str, cache_dir: Path):
    package = load_package(model_dir)
    meta = package.metadata
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]), GraphSettings.from_metadata(meta["graph"]),
                         cache_dir=cache_dir)
    keep, images, available = subset_inputs(cohort, subset)
    if meta["architecture"] == "sf_teacher":  # as `reactkd evaluate`: a PET/CT model is scored where PET exists
        has_pet = available[:, 1:].any(dim=1)
        keep, images, available = keep[has_pet], images[has_pet], available[has_pet]
    probs = predict(package.model, images, available, cohort.region_labels[keep], torch.device("cpu"))
    return keep.numpy(), cohort.labels.numpy()[keep.numpy()], probs, meta


def handcrafted(train_records, test_records):
    """Out-of-sample probabilities of the hand-made feature baseline (see the module docstring)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from reactkd.cohort.synth.signal import ct_tumour_features
    from reactkd.images.readers import read_image

    def features(records):
        return np.array([ct_tumour_features(read_image(r.ct), read_image(r.mask)) for r in records])

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features(train_records), np.array([r.label for r in train_records]))
    return {r.case_id for r in test_records}, model.predict_proba(features(test_records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--model-a", type=Path, required=True, help="a model package, or 'handcrafted'")
    parser.add_argument("--model-b", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--modalities", default="ct", choices=("ct", "ct+fdg", "ct+act", "all"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    every = read_manifest(args.manifest)
    seed = load_package(args.model_b).metadata["training"]["config"]["seed"]
    train, test = split_fold(every, args.fold, args.folds, seed=seed)
    records = [every[i] for i in test]
    cache = args.manifest.resolve().parent / ".reactkd-cache"
    keep_b, labels, probs_b, _ = probabilities(args.model_b, records, args.modalities, cache)
    if str(args.model_a) == "handcrafted":
        if args.modalities != "ct":
            raise SystemExit("the hand-made baseline compares CT models (--modalities ct)")
        scored, probs_a = handcrafted([every[i] for i in train], records)
        if scored != {records[i].case_id for i in keep_b}:
            raise SystemExit("the baseline and the model were scored on different cases")
    else:
        keep_a, labels_a, probs_a, _ = probabilities(args.model_a, records, args.modalities, cache)
        if (keep_a != keep_b).any() or (labels != labels_a).any():
            raise SystemExit("the two models were scored on different cases")
    print(json.dumps(paired_macro_auc_difference(labels, probs_a, probs_b, args.bootstrap), indent=1))


if __name__ == "__main__":
    main()
