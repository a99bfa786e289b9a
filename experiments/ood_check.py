"""How often a package's out-of-distribution score flags the cases of a cohort: about 5 % on cases like its
training cases (the threshold is the 95th percentile of its validation cases), more on shifted ones.

    python experiments/ood_check.py --model REACTKD/reactkd/data/models/reactkd-demo-student \
        --manifest fresh/manifest.csv [--limit 150]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--limit", type=int, help="the first N cases only")
    args = parser.parse_args()

    import torch

    from reactkd.cli.evaluate import subset_inputs
    from reactkd.cohort.cache import cohort_cache_dir, load_cohort
    from reactkd.cohort.manifest import read_manifest
    from reactkd.graph.settings import GraphSettings
    from reactkd.images.readers import image_spacing
    from reactkd.models.base import pooled_features
    from reactkd.ood import InputProfile
    from reactkd.package.model_package import load_package
    from reactkd.preprocessing import PreprocessConfig

    package = load_package(args.model)
    meta = package.metadata
    profile = InputProfile.from_dict(meta["input_profile"])
    records = read_manifest(args.manifest)[:args.limit]
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]),
                         GraphSettings.from_metadata(meta.get("graph")), cache_dir=cohort_cache_dir(args.manifest))
    keep, images, available = subset_inputs(cohort, "ct")
    features = []
    with torch.no_grad():
        for start in range(0, len(keep), 8):
            part = slice(start, start + 8)
            out = package.model(images[part], available[part], cohort.region_labels[keep][part])
            features.append(pooled_features(out.features).numpy())
    distance = profile.distance(np.concatenate(features))
    spacing_warned = [bool(profile.warnings(image_spacing(records[i].ct), 0.0)) for i in keep.tolist()]
    print(json.dumps({"model": args.model, "manifest": args.manifest, "n": int(len(distance)),
                      "threshold": round(profile.threshold, 3), "flagged_share": round(float(np.mean(
                          distance > profile.threshold)), 3), "median_score": round(float(np.median(distance)), 3),
                      "spacing_warned_share": round(float(np.mean(spacing_warned)), 3)}, indent=1))


if __name__ == "__main__":
    main()
