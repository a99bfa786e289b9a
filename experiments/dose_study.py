"""The dose study (docs/results.md): macro AUC of several CT models against the simulated dose, on the held-out
test cases of one fold, on one figure; the liver noise at each dose; and the AUC lost from dose 1 to 0.1.

    python experiments/dose_study.py --manifest build/demo-model/cohort/manifest.csv \
        --model shipped-student=build/demo-model/student --model dose-teacher=build/demo-model/teacher-dose \
        --model no-teacher-student=build/dose-study/student-no-teacher \
        --train-no-teacher build/demo-model/config.yaml --out build/dose-study

`--train-no-teacher CONFIG` first trains the student without teachers (CONFIG with alpha 0 and lambda_graph 0,
same fold, epochs and seed as the shipped student) into the folder of the model named no-teacher-student,
unless a package is already there. Inputs are `reactkd evaluate --doses`'s own (`cli.evaluate.dose_inputs`:
each native CT degraded, then preprocessed), computed once and shared by every model, whose held-out cases
must agree. Intervals are case bootstraps conditional on one training run per model (paired between doses
and between models on the same cases). Writes dose_study.json, dose_study.md and auc_vs_dose.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import yaml

from reactkd.cli.evaluate import dose_inputs, predict
from reactkd.cohort.cache import cohort_cache_dir, load_cohort, read_record
from reactkd.cohort.doses import case_dose_seed, model_slab
from reactkd.cohort.folds import PackageSplit
from reactkd.cohort.manifest import read_manifest
from reactkd.evaluation.metrics import classification_metrics
from reactkd.evaluation.plots import plot_auc_vs_dose_models
from reactkd.graph.settings import GraphSettings
from reactkd.ldct.simulator import simulate_low_dose_image
from reactkd.package.model_package import load_package
from reactkd.preprocessing import PreprocessConfig
from reactkd.scores import macro_auc

NOISE_CASES = 20
N_BOOTSTRAP = 2000


def train_no_teacher(config: Path, manifest: Path, out: Path, reference: dict) -> None:
    if (out / "metadata.json").exists():
        return
    data = yaml.safe_load(config.read_text())
    data.update(alpha=0.0, lambda_graph=0.0)
    out.mkdir(parents=True, exist_ok=True)
    no_teacher = out.parent / f"{out.name}-config.yaml"
    no_teacher.write_text(yaml.safe_dump(data, sort_keys=False))
    training = reference["training"]
    subprocess.run([sys.executable, "-m", "reactkd", "train", "--stage", "student", "--manifest", str(manifest),
                    "--config", str(no_teacher), "--out", str(out), "--fold", str(training["fold"]),
                    "--folds", str(training["folds"]), "--epochs", str(training["config"]["epochs"]),
                    "--resume"], check=True)


def liver_noise(records, doses, margin_mm: float) -> dict[str, list[float]]:
    """Liver noise SD (HU, native grid) per dose: the case's own full-dose variance is what dose 0.5 adds
    ((1/d - 1) = 1), so the total at dose d is sqrt(own + added(d)). Mean over the first NOISE_CASES cases."""
    added = {d: [] for d in doses}
    for record in records[:NOISE_CASES]:
        ct, mask, _, _ = read_record(record, with_pet=False)
        slab, mask_slab = model_slab(ct, mask, margin_mm)
        liver = sitk.GetArrayViewFromImage(mask_slab) == 1
        base = sitk.GetArrayFromImage(slab).astype(np.float64)
        for d in sorted(set(doses) | {0.5}):
            if d < 1:
                low = sitk.GetArrayFromImage(simulate_low_dose_image(
                    slab, d, seed=case_dose_seed(record.case_id, d), input_is_full_dose=True))
                added.setdefault(d, []).append(float((low - base)[liver].var()))
    own = np.array(added[0.5])
    return {f"{d:g}": float(np.mean(np.sqrt(own + (np.array(added[d]) if d < 1 else 0.0)))) for d in doses}


def bootstrap_drops(labels, probs: dict, low_dose: float, seed: int = 0) -> dict:
    """AUC(1) - AUC(low_dose) per model, and each model's drop minus every other's, with paired case-bootstrap
    95 % intervals."""
    rng = np.random.default_rng(seed)
    names = list(probs)
    draws = {name: [] for name in names}
    n = len(labels)
    while len(draws[names[0]]) < N_BOOTSTRAP:
        index = rng.integers(0, n, n)
        if len(np.unique(labels[index])) < 3:
            continue
        for name in names:
            draws[name].append(macro_auc(labels[index], probs[name][1.0][index])
                               - macro_auc(labels[index], probs[name][low_dose][index]))
    out = {}
    for name in names:
        point = macro_auc(labels, probs[name][1.0]) - macro_auc(labels, probs[name][low_dose])
        out[name] = {"drop": point, "ci95": np.percentile(draws[name], [2.5, 97.5]).tolist()}
        for other in names:
            if other != name:
                diff = np.array(draws[name]) - np.array(draws[other])
                out[name][f"minus {other}"] = {"value": point - (macro_auc(labels, probs[other][1.0])
                                                                 - macro_auc(labels, probs[other][low_dose])),
                                               "ci95": np.percentile(diff, [2.5, 97.5]).tolist(),
                                               "p_not_smaller": float(np.mean(diff >= 0))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=PACKAGE_FOLDER (repeatable)")
    parser.add_argument("--train-no-teacher", type=Path, help="config of the no-teacher student to train first")
    parser.add_argument("--doses", default="1,0.5,0.25,0.1,0.05")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    doses = [float(d) for d in args.doses.split(",")]
    models = dict(item.split("=", 1) for item in args.model)
    if args.train_no_teacher:
        reference = json.loads((Path(models["shipped-student"]) / "metadata.json").read_text())
        train_no_teacher(args.train_no_teacher, args.manifest, Path(models["no-teacher-student"]), reference)
    records = read_manifest(args.manifest)
    packages = {name: load_package(folder) for name, folder in models.items()}
    splits = {name: PackageSplit.of(p.metadata) for name, p in packages.items()}
    held_out = {name: split.held_out(records, str(args.manifest)) for name, split in splits.items()}
    first = next(iter(held_out.values()))
    if any(h != first for h in held_out.values()):
        raise SystemExit("the models were not trained on the same split: their test cases differ")
    test = [records[i] for i in first]
    preprocess = {json.dumps(p.metadata["preprocessing"], sort_keys=True) for p in packages.values()}
    if len(preprocess) != 1:
        raise SystemExit("the models preprocess differently; one set of dose inputs cannot serve them all")
    config = PreprocessConfig.from_dict(next(iter(packages.values())).metadata["preprocessing"])
    graph = GraphSettings.from_metadata(next(iter(packages.values())).metadata.get("graph"))
    cohort = load_cohort(test, config, graph, cache_dir=cohort_cache_dir(args.manifest))
    labels = cohort.labels.numpy()
    inputs = dose_inputs(test, config, doses)
    device = torch.device("cpu")
    probs = {name: {d: predict(p.model, *inputs[d], cohort.region_labels, device) for d in doses}
             for name, p in packages.items()}
    class_names = next(iter(packages.values())).metadata["class_names"]
    table = {name: {f"{d:g}": classification_metrics(labels, probs[name][d], class_names, n_bootstrap=N_BOOTSTRAP)
                    for d in doses} for name in packages}
    drops = bootstrap_drops(labels, probs, 0.1) if 0.1 in doses and 1.0 in doses else {}
    noise = liver_noise(test, doses, config.margin_mm)
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {name: {d: (m[f"{d:g}"]["auc_macro"], *m[f"{d:g}"]["ci95"]["auc_macro"]) for d in doses}
              for name, m in table.items()}
    plot_auc_vs_dose_models(curves, args.out / "auc_vs_dose.png")
    record = {"manifest": str(args.manifest), "n_test": len(test), "doses": doses, "models": models,
              "auc": {name: {d: curves[name][d] for d in doses} for name in curves}, "drop_1_to_0.1": drops,
              "liver_noise_sd_hu": noise, "metrics": table}
    (args.out / "dose_study.json").write_text(json.dumps(record, indent=1, default=float))
    lines = ["| model | " + " | ".join(f"dose {d:g}" for d in doses) + " |", "|---|" + "---|" * len(doses)]
    for name in curves:
        lines.append(f"| {name} | " + " | ".join(f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                                                (curves[name][d] for d in doses)) + " |")
    lines.append("| liver noise SD, native (HU) | " + " | ".join(f"{noise[f'{d:g}']:.1f}" for d in doses) + " |")
    for name, drop in drops.items():
        others = "; ".join(f"{k} {v['value']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
                           for k, v in drop.items() if k.startswith("minus"))
        lines.append(f"\n{name}: AUC(1) - AUC(0.1) = {drop['drop']:+.3f} [{drop['ci95'][0]:+.3f}, "
                     f"{drop['ci95'][1]:+.3f}]; {others}")
    text = f"{len(test)} held-out test cases\n\n" + "\n".join(lines) + "\n"
    (args.out / "dose_study.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
