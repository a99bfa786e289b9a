"""How far apart a teacher's region graph puts a tumour and its own ring, on the deepest map and the stride-4 one.

For RGD to carry anything, the teacher's node features must tell regions apart. On each case: the largest
tumour T1 and its ring R1 (the first ring node), their distance in the teacher graph (normalised so that the
mean node pair is 1, as RGD normalises it), and the overlap of their soft pooling masks on the map (cosine of
the two weight volumes: 1 = the map cannot tell them apart):

    python experiments/rgd_map.py --model build/kd-study/teachers/v2/teacher-sf-in-sample \
        --manifest build/kd-study/cohorts/train-v2/manifest.csv --cases 40
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from reactkd.cohort.cache import cohort_cache_dir, load_cohort
from reactkd.cohort.manifest import read_manifest
from reactkd.graph import GraphSettings, node_features, soft_region_masks
from reactkd.losses import graph_distances
from reactkd.models import GRAPH_MAPS, graph_map
from reactkd.package.model_package import load_package
from reactkd.preprocessing import PreprocessConfig
from reactkd.vocabulary import FIRST_TUMOUR_LABEL, RING_LABEL


@torch.no_grad()
def separation(model_dir, manifest, n_cases: int) -> dict:
    package = load_package(model_dir)
    meta = package.metadata
    records = read_manifest(manifest)[:n_cases]
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]),
                         GraphSettings.from_metadata(meta["graph"]), cache_dir=cohort_cache_dir(manifest))
    rows = {name: {"tumour_ring_distance": [], "mask_overlap": [], "tumour_liver_distance": []} for name in GRAPH_MAPS}
    shapes = {}
    for i in range(len(cohort)):
        images, available = cohort.images[i:i + 1], cohort.available[i:i + 1]
        if meta["architecture"] == "sf_teacher" and not bool(available[0, 1:].any()):
            continue
        out = package.model(images, available, cohort.region_labels[i:i + 1])
        node_index, n_nodes = cohort.node_index[i:i + 1], int(cohort.n_nodes[i])
        labels = cohort.region_labels[i]
        kinds = [int(labels[node_index[0] == j].max()) for j in range(n_nodes)]
        tumours = [j for j, k in enumerate(kinds) if k >= FIRST_TUMOUR_LABEL]
        rings = [j for j, k in enumerate(kinds) if k == RING_LABEL]
        livers = [j for j, k in enumerate(kinds) if 0 < k < RING_LABEL]
        if not tumours or not rings:
            continue
        t, r = tumours[0], rings[0]
        for name in GRAPH_MAPS:
            feature_map = graph_map(out, name).float()
            shapes[name] = list(feature_map.shape[1:])
            masks = soft_region_masks(node_index, n_nodes, feature_map.shape[2:])  # (1, nodes, d, h, w)
            nodes = node_features(feature_map, masks)
            distances = graph_distances(nodes, torch.ones(1, n_nodes, dtype=torch.bool))[0]
            flat = masks[0].flatten(1)
            overlap = float(torch.nn.functional.cosine_similarity(flat[t], flat[r], dim=0))
            rows[name]["tumour_ring_distance"].append(float(distances[t, r]))
            rows[name]["mask_overlap"].append(overlap)
            if livers:
                rows[name]["tumour_liver_distance"].append(float(distances[t, livers].mean()))
    return {name: {key: float(np.mean(values)) if values else None for key, values in row.items()}
            | {"cases": len(row["tumour_ring_distance"]), "map_channels_and_shape": shapes.get(name)}
            for name, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--cases", type=int, default=40)
    args = parser.parse_args()
    result = {model: separation(model, args.manifest, args.cases) for model in args.model}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
