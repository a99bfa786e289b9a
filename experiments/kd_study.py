"""The pre-registered distillation study (docs/preregistration.md): cohorts, teachers, every arm's runs, analysis.

    python experiments/kd_study.py run --root build/kd-study            # resumable: rerun to continue
    python experiments/kd_study.py run --root build/kd-study --max-minutes 60
    python experiments/kd_study.py report --root build/kd-study --json experiments/results/kd-study.json

Runs are scheduled seed by seed across the arms (seed 0 of every arm, then seed 1, ...), so a study stopped
early has every arm at about the same number of runs. A run's record (runs/<arm>/seed-<s>.json, with its
per-case test probabilities) is written once it is complete and never redone. Teachers are trained once per
world on split_seed 0 (every student run shares them; run s of every arm has seed s: initialisation and batch
order). Nothing here looks at the test cohorts before the report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import yaml

from reactkd.atomic import write_text_atomic
from reactkd.cli.evaluate import predict, subset_inputs
from reactkd.cli.main import main as cli
from reactkd.cohort.cache import cohort_cache_dir, load_cohort
from reactkd.cohort.manifest import read_manifest
from reactkd.evaluation.metrics import attention_share
from reactkd.evaluation.study import hierarchical_bootstrap, run_level, run_metrics
from reactkd.graph import GraphSettings
from reactkd.images.readers import read_image
from reactkd.package.model_package import load_package
from reactkd.preprocessing import PreprocessConfig

CONFIG = Path(__file__).resolve().parents[1] / "REACTKD/reactkd/configs/demo.yaml"
#: The study's cohorts: name -> (world, size, cases, seed). Training cohorts: fold 0 of 5 (its test fifth unused),
#: 128 fit and 32 inner-validation cases. Test cohorts: fresh seeds no choice looked at.
COHORTS = {"train-v2": ("v2", "small", 200, 24001), "train-null": ("null", "small", 200, 24001),
           "test-v2": ("v2", "small", 600, 24777), "test-null": ("null", "small", 600, 24777),
           "cam-clinical": ("v2", "clinical", 6, 24999)}
FOLDS = 5
TEACHER_EPOCHS = {"teacher-sf": 8, "teacher-dose": 6}
STUDENT_EPOCHS = 10
#: The study's grid: the demo config's network on a 16 x 32 x 32 grid, so that 94 student runs and 14 teachers
#: fit one sitting on 2 CPU cores (docs/preregistration.md, "Budget").
GRID = [16, 32, 32]
CROSS_FIT_FOLDS = 3
KD = {"alpha": 0.7, "lambda_graph": 0.0}
NO_TEACHERS = {"alpha": 0.0, "lambda_graph": 0.0}
PRIMARY_RUNS, EXPLORATORY_RUNS = 14, 3
#: arm -> (world, config overrides, teachers: "cross_fitted" | "in_sample" | None, primary)
ARMS = {
    "none": ("v2", NO_TEACHERS, None, True),
    "kd_cross_fitted": ("v2", {**KD, "teacher_targets": "cross_fitted"}, "cross_fitted", True),
    "kd_oracle": ("v2", {**KD, "teacher_targets": "oracle"}, None, True),
    "null_none": ("null", NO_TEACHERS, None, True),
    "null_kd_cross_fitted": ("null", {**KD, "teacher_targets": "cross_fitted"}, "cross_fitted", True),
    "kd_in_sample": ("v2", {**KD, "teacher_targets": "in_sample"}, "in_sample", False),
    "kd_sf_alone": ("v2", {**KD, "teacher_weights": [1.0, 0.0]}, "cross_fitted", False),
    "kd_dose_alone": ("v2", {**KD, "teacher_weights": [0.0, 1.0]}, "cross_fitted", False),
    "kd_rgd": ("v2", {"alpha": 0.7, "lambda_graph": 1.0, "rgd_kind": "gw"}, "cross_fitted", False),
    "kd_rgd_relational": ("v2", {"alpha": 0.7, "lambda_graph": 1.0, "rgd_kind": "relational"}, "cross_fitted", False),
    "full": ("v2", {"alpha": 0.7, "lambda_graph": 1.0, "student": {"in_channels": 3}, "modality_dropout": 0.3,
                    "ct_only_share": 0.5}, "cross_fitted", False),
    "global_head": ("v2", {**NO_TEACHERS, "head": "global"}, None, False),
    "global_head_descriptors": ("v2", {**NO_TEACHERS, "head": "global",
                                       "student": {"in_channels": 1, "intensity_descriptors": True}}, None, False),
}
#: The pre-registered contrasts: (name, arm B, arm A): B minus A, paired by seed.
CONTRASTS = [("H1 KD cross-fitted vs none (v2)", "kd_cross_fitted", "none"),
             ("H2 KD oracle vs none (v2): the headroom", "kd_oracle", "none"),
             ("H3 KD cross-fitted vs none (null world): regularisation", "null_kd_cross_fitted", "null_none")]
SESOI = 0.02
#: The null world's CTs, masks and grades are those of v2 (same seed; only PET differs), so a CT-only student
#: without teachers is the same network in both (CPU training is deterministic): `null_none` is trained for
#: real on these seeds, checked to equal `none`, and reuses `none`'s runs for the others.
NULL_NONE_CHECKED_SEEDS = 2
CAM_SMALL_CASES = 8


def runs_of(arm: str) -> int:
    return PRIMARY_RUNS if ARMS[arm][3] else EXPLORATORY_RUNS


def ensure_cohorts(root: Path) -> dict[str, Path]:
    manifests = {}
    for name, (world, size, cases, seed) in COHORTS.items():
        manifest = root / "cohorts" / name / "manifest.csv"
        if not manifest.is_file():
            command(["synth", "--out", str(manifest.parent), "--cases", str(cases), "--size", size, "--world", world,
                     "--seed", str(seed), "--progress", "none"])
        manifests[name] = manifest
    return manifests


def command(args: list[str]) -> None:
    code = cli(args)
    if code != 0:
        raise SystemExit(f"command failed ({code}): reactkd {' '.join(args)}")


def write_config(path: Path, overrides: dict, seed: int) -> Path:
    base = yaml.safe_load(CONFIG.read_text())
    # The study ran on the defaults of 2026-12-01 for what demo.yaml leaves open; pinned so that a later edit of
    # demo.yaml (its rgd_map for the shipped student) does not change a rerun.
    pinned = {"rgd_map": "stride4", "rgd_kind": "gw", "ct_only_share": 0.5, "teacher_targets": "cross_fitted"}
    merged = {**base, **pinned, **{k: v for k, v in overrides.items() if k != "student"}, "seed": seed,
              "split_seed": 0, "cross_fit_folds": CROSS_FIT_FOLDS}
    merged["preprocessing"] = {**base.get("preprocessing", {}), "grid": GRID}
    merged["student"] = {**base.get("student", {}), **overrides.get("student", {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged))
    return path


def teachers(root: Path, world: str, manifest: Path, kind: str) -> list[str]:
    """Train (once) and return the --teacher-sf / --teacher-dose arguments of the given kind of targets."""
    arguments = []
    for stage in ("teacher-sf", "teacher-dose"):
        parts = range(CROSS_FIT_FOLDS) if kind == "cross_fitted" else [None]
        folders = []
        for part in parts:
            name = f"{stage}-part{part}" if part is not None else f"{stage}-in-sample"
            folder = root / "teachers" / world / name
            if not (folder / "model.safetensors").is_file():
                config = write_config(root / "teachers" / world / f"{name}.yaml", {}, seed=0)
                command(["train", "--stage", stage, "--manifest", str(manifest), "--config", str(config),
                         "--folds", str(FOLDS), "--out", str(folder), "--epochs", str(TEACHER_EPOCHS[stage]),
                         "--progress", "none", "--resume", *(["--cross-fit-part", str(part)] if part is not None else [])])
            folders.append(str(folder))
        arguments += [f"--{stage}", *folders]
    return arguments


def used_teacher_arguments(arguments: list[str], weights: list[float]) -> list[str]:
    """Drop the teacher kind whose weight is 0 (train refuses teachers it would not use)."""
    sf_end = arguments.index("--teacher-dose")
    kept = []
    if weights[0] > 0:
        kept += arguments[:sf_end]
    if weights[1] > 0:
        kept += arguments[sf_end:]
    return kept


def test_probabilities(model_dir: Path, manifest: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(case ids, grades, CT-only probabilities) of a student on a whole test cohort."""
    package = load_package(model_dir)
    meta = package.metadata
    records = read_manifest(manifest)
    cohort = load_cohort(records, PreprocessConfig.from_dict(meta["preprocessing"]),
                         GraphSettings.from_metadata(meta["graph"]), cache_dir=cohort_cache_dir(manifest))
    keep, images, available = subset_inputs(cohort, "ct")
    probs = predict(package.model, images, available, cohort.region_labels[keep], torch.device("cpu"))
    return [records[i].case_id for i in keep.tolist()], cohort.labels.numpy()[keep.numpy()], probs


def gradcam_shares(model_dir: Path, manifests: list[tuple[Path, int]]) -> dict[str, float]:
    """Mean share of the Grad-CAM mass within 5 mm of the tumour (physical distance), per cohort size."""
    from reactkd.inference.classifier import Classifier

    classifier = Classifier(model_dir, device="cpu")
    shares = {}
    for manifest, n in manifests:
        values = []
        for record in read_manifest(manifest)[:n]:
            ct, mask = read_image(record.ct), read_image(record.mask)
            cam = sitk.GetArrayFromImage(classifier.classify(ct, mask).attention_gradcam)
            share = attention_share(cam, sitk.GetArrayViewFromImage(mask), ct.GetSpacing()[::-1])
            values.append(0.0 if share is None else share)
        shares[manifest.parent.name] = float(np.mean(values))
    return shares


def run_one(root: Path, manifests: dict[str, Path], arm: str, seed: int) -> dict:
    world, overrides, teacher_kind, _ = ARMS[arm]
    folder = root / "runs" / arm / f"seed-{seed}"
    record_path = folder.with_suffix(".json")
    if record_path.is_file():
        return json.loads(record_path.read_text())
    if arm == "null_none" and seed >= NULL_NONE_CHECKED_SEEDS:
        record = {**run_one(root, manifests, "none", seed), "arm": arm, "world": world, "reused_from": "none"}
        write_text_atomic(record_path, json.dumps(record))
        return record
    train_manifest = manifests[f"train-{world}"]
    extra = []
    if teacher_kind is not None:
        weights = overrides.get("teacher_weights", [0.5, 0.5])
        extra = used_teacher_arguments(teachers(root, world, train_manifest, teacher_kind), weights)
    config = write_config(folder / "config.yaml", overrides, seed)
    started = time.monotonic()
    command(["train", "--stage", "student", "--manifest", str(train_manifest), "--config", str(config),
             "--folds", str(FOLDS), "--out", str(folder / "student"), "--epochs", str(STUDENT_EPOCHS),
             "--progress", "none", "--resume", *extra])
    seconds = time.monotonic() - started
    cases, labels, probs = test_probabilities(folder / "student", manifests[f"test-{world}"])
    training = load_package(folder / "student").metadata["training"]
    cam = gradcam_shares(folder / "student", [(manifests[f"test-{world}"], CAM_SMALL_CASES),
                                              (manifests["cam-clinical"], COHORTS["cam-clinical"][2])])
    record = {"arm": arm, "seed": seed, "world": world, "overrides": overrides, "train_seconds": round(seconds, 1),
              "best_epoch": training["best_epoch"], "best_val_macro_auc": training["best_val_macro_auc"],
              "final_train_loss": training["history"][-1].get("train_total"),
              "final_train_cls": training["history"][-1].get("train_cls"),
              "teacher_targets": training["teacher_targets"]["mode"],
              "ct_only_exposure": training["ct_only_exposure"], "metrics": run_metrics(labels, probs),
              "gradcam_within_5mm": cam, "cases": cases, "labels": labels.tolist(),
              "probabilities": np.round(probs, 6).tolist()}
    write_text_atomic(record_path, json.dumps(record))
    return record


def run_study(root: Path, arms: list[str], max_minutes: float | None) -> None:
    manifests = ensure_cohorts(root)
    started = time.monotonic()
    for seed in range(PRIMARY_RUNS):
        for arm in arms:
            if seed >= runs_of(arm):
                continue
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                print(f"stopping: {max_minutes} minutes spent; rerun to continue")
                return
            record = run_one(root, manifests, arm, seed)
            print(f"{arm} seed {seed}: macro AUC {record['metrics']['auc_macro']:.3f} "
                  f"({record['train_seconds']:.0f} s)", flush=True)


def load_runs(root: Path) -> dict[str, list[dict]]:
    runs = {}
    for arm in ARMS:
        records = [json.loads(p.read_text()) for p in sorted((root / "runs" / arm).glob("seed-*.json"))]
        if records:
            runs[arm] = sorted(records, key=lambda r: r["seed"])
    return runs


def stacked(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array(records[0]["labels"])
    return labels, np.stack([np.array(r["probabilities"]) for r in records])


def handcrafted_reference(root: Path, world: str) -> dict:
    """The handcrafted CT-feature logistic regression fitted on the training part, scored on the test cohort
    (computed once, kept in the root)."""
    path = root / f"handcrafted-{world}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from compare_models import handcrafted

    from reactkd.cohort.folds import split_fold

    train_records = read_manifest(root / "cohorts" / f"train-{world}" / "manifest.csv")
    train_part, _ = split_fold(train_records, 0, FOLDS, seed=0)
    test_records = read_manifest(root / "cohorts" / f"test-{world}" / "manifest.csv")
    _, probs = handcrafted([train_records[i] for i in train_part], test_records)
    result = run_metrics(np.array([r.label for r in test_records]), probs)
    write_text_atomic(path, json.dumps(result))
    return result


def cam_by_size(record: dict) -> dict[str, float]:
    """A run's Grad-CAM shares by cohort size (the small test cohort's name differs by world; a reused
    run keeps its source's)."""
    shares = record["gradcam_within_5mm"]
    return {"small": next(v for k, v in shares.items() if k.startswith("test-")), "clinical": shares["cam-clinical"]}


def report(root: Path) -> dict:
    runs = load_runs(root)
    arms = {}
    for arm, records in runs.items():
        labels, probs = stacked(records)
        metrics = {name: run_level([r["metrics"][name] for r in records]) for name in records[0]["metrics"]}
        cams = {size: run_level([cam_by_size(r)[size] for r in records]) for size in ("small", "clinical")}
        arms[arm] = {"world": ARMS[arm][0], "primary": ARMS[arm][3], "runs_planned": runs_of(arm),
                     "runs_done": len(records), "metrics": metrics,
                     "auc_macro_hierarchical": hierarchical_bootstrap(labels, probs) if len(records) > 1 else None,
                     "gradcam_within_5mm": cams,
                     "gradcam_within_5mm_both_sizes": run_level([np.mean(list(r["gradcam_within_5mm"].values()))
                                                                 for r in records]),
                     "train_seconds": run_level([r["train_seconds"] for r in records]),
                     "final_train_loss": run_level([r["final_train_loss"] for r in records]),
                     "final_train_cls": run_level([r["final_train_cls"] for r in records])}
    contrasts = {}
    baselines = {"v2": "none", "null": "null_none"}
    pairs = [(name, b, a) for name, b, a in CONTRASTS] + [
        (f"exploratory: {arm} vs {baselines[ARMS[arm][0]]}", arm, baselines[ARMS[arm][0]])
        for arm in ARMS if not ARMS[arm][3]]
    for name, b, a in pairs:
        if b not in runs or a not in runs:
            continue
        seeds = sorted({r["seed"] for r in runs[a]} & {r["seed"] for r in runs[b]})
        if not seeds:
            continue
        pick = {arm: [r for r in runs[arm] if r["seed"] in seeds] for arm in (a, b)}
        labels, probs_a = stacked(pick[a])
        _, probs_b = stacked(pick[b])
        differences = [rb["metrics"]["auc_macro"] - ra["metrics"]["auc_macro"] for ra, rb in zip(pick[a], pick[b])]
        contrasts[name] = {"b": b, "a": a, "seeds": seeds, "run_level": run_level(differences),
                           "per_run": differences,
                           "hierarchical": hierarchical_bootstrap(labels, probs_a, probs_b) if len(seeds) > 1 else None}
    if all(k in runs for k in ("none", "kd_cross_fitted", "null_none", "null_kd_cross_fitted")):
        gain = {r["seed"]: r["metrics"]["auc_macro"] for r in runs["kd_cross_fitted"]}
        base = {r["seed"]: r["metrics"]["auc_macro"] for r in runs["none"]}
        null_gain = {r["seed"]: r["metrics"]["auc_macro"] for r in runs["null_kd_cross_fitted"]}
        null_base = {r["seed"]: r["metrics"]["auc_macro"] for r in runs["null_none"]}
        seeds = sorted(set(gain) & set(base) & set(null_gain) & set(null_base))
        contrasts["v2 gain minus null-world gain (privileged information beyond regularisation)"] = {
            "seeds": seeds, "run_level": run_level([(gain[s] - base[s]) - (null_gain[s] - null_base[s]) for s in seeds])}
    references = {world: handcrafted_reference(root, world) for world in ("v2", "null")}
    checked = [float(np.abs(np.array(a["probabilities"]) - np.array(b["probabilities"])).max())
               for a in runs.get("none", []) for b in runs.get("null_none", [])
               if a["seed"] == b["seed"] and "reused_from" not in b]
    h3 = CONTRASTS[2][0]
    if h3 in contrasts and (not checked or max(checked) > 0):  # the reuse rests on this check
        contrasts[h3].update(valid=False, invalid_because="not valid: null_none's trained seeds do not reproduce "
                                                           f"none's (max difference {max(checked, default=None)})")
    return {"sesoi": SESOI, "arms": arms, "contrasts": contrasts, "reading": reading(contrasts),
            "handcrafted_ct_baseline": references,
            "null_none_equals_none": {"seeds_trained": len(checked),
                                      "max_abs_probability_difference": max(checked) if checked else None}}


def reading(contrasts: dict) -> dict:
    """The pre-registered decision rule applied to each primary contrast (docs/preregistration.md)."""
    out = {}
    for name, _, _ in CONTRASTS:
        if name not in contrasts or contrasts[name]["run_level"]["n_runs"] < 2:
            out[name] = "not enough runs"
            continue
        low, high = contrasts[name]["run_level"]["ci95"]
        mean = contrasts[name]["run_level"]["mean"]
        if not contrasts[name].get("valid", True):
            out[name] = contrasts[name]["invalid_because"]
        elif low > 0 and mean >= SESOI:
            out[name] = f"supported: gain {mean:+.3f} [{low:+.3f}, {high:+.3f}] excludes 0 and reaches +{SESOI}"
        elif high < SESOI:
            out[name] = (f"not supported: gain {mean:+.3f} [{low:+.3f}, {high:+.3f}]; the interval rules out a gain "
                         f"of +{SESOI} or more")
        else:
            out[name] = f"inconclusive: gain {mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        if contrasts[name].get("valid", True) and high < 0:
            out[name] += "; the whole interval is below 0: a loss"
    return out


def smoke() -> None:
    """A tiny study (every arm, one epoch, a few cases) that checks the driver end to end in minutes."""
    global COHORTS, TEACHER_EPOCHS, STUDENT_EPOCHS, PRIMARY_RUNS, EXPLORATORY_RUNS, CAM_SMALL_CASES, \
        NULL_NONE_CHECKED_SEEDS
    COHORTS = {"train-v2": ("v2", "small", 60, 5), "train-null": ("null", "small", 60, 5),
               "test-v2": ("v2", "small", 24, 6), "test-null": ("null", "small", 24, 6),
               "cam-clinical": ("v2", "clinical", 1, 7)}
    TEACHER_EPOCHS = {"teacher-sf": 1, "teacher-dose": 1}
    STUDENT_EPOCHS, PRIMARY_RUNS, EXPLORATORY_RUNS, CAM_SMALL_CASES, NULL_NONE_CHECKED_SEEDS = 1, 2, 1, 2, 1


def _pair(values, fmt: str = ".3f") -> str:
    return f"[{values[0]:{fmt}}, {values[1]:{fmt}}]"


def _ci(level: dict, digits: int = 3) -> str:
    low, high = level["ci95"]
    if level["mean"] is None:
        return "-"
    if low is None:
        return f"{level['mean']:.{digits}f}"
    return f"{level['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(result: dict) -> str:
    """The report's tables, as docs/results.md shows them."""
    lines = ["| arm | world | runs | macro AUC, run-level 95 % CI | hierarchical bootstrap CI | accuracy | NLL | "
             "Brier | classwise ECE | C-index | moderate vs rest AUC | Grad-CAM within 5 mm (small / clinical) | "
             "final training loss: total / classification |", "|" + "---|" * 13]
    for arm, row in result["arms"].items():
        m = row["metrics"]
        hier = row["auc_macro_hierarchical"]
        cams = " / ".join(f"{v['mean']:.2f}" for v in row["gradcam_within_5mm"].values())
        lines.append(f"| `{arm}`{' (primary)' if row['primary'] else ''} | {row['world']} | {row['runs_done']}/"
                     f"{row['runs_planned']} | {_ci(m['auc_macro'])} | "
                     f"{_pair(hier['ci95']) if hier else '-'} | {_ci(m['accuracy'])} | "
                     f"{_ci(m['nll'])} | {_ci(m['brier'])} | {_ci(m['ece_classwise'])} | {_ci(m['c_index'])} | "
                     f"{_ci(m['auc_moderate_vs_rest'])} | {cams} | {row['final_train_loss']['mean']:.3f} / "
                     f"{row['final_train_cls']['mean']:.3f} |")
    lines += ["", "| contrast (B minus A, paired by seed) | runs | mean difference, run-level 95 % CI | per run | "
              "hierarchical bootstrap CI | P(B not better) |", "|---|---|---|---|---|---|"]
    for name, c in result["contrasts"].items():
        hier = c.get("hierarchical")
        per_run = ", ".join(f"{d:+.3f}" for d in c.get("per_run", []))
        low, high = c["run_level"]["ci95"]
        interval = f"{c['run_level']['mean']:+.3f}" + (f" [{low:+.3f}, {high:+.3f}]" if low is not None else "")
        lines.append(f"| {name} | {c['run_level']['n_runs']} | {interval} | {per_run or '-'} | "
                     f"{_pair(hier['ci95'], '+.3f') if hier else '-'} | "
                     f"{format(hier['p_not_better'], '.2f') if hier else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny study that checks the driver (minutes)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--root", type=Path, default=Path("build/kd-study"))
    run.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    run.add_argument("--max-minutes", type=float)
    rep = sub.add_parser("report")
    rep.add_argument("--root", type=Path, default=Path("build/kd-study"))
    rep.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.smoke:
        smoke()
    if args.command == "run":
        run_study(args.root, args.arms, args.max_minutes)
        return
    result = report(args.root)
    runs = load_runs(args.root)
    result["runs"] = [r for records in runs.values() for r in records]
    if args.json:
        write_text_atomic(args.json, json.dumps(result, separators=(",", ":")))  # every run: compact
    print(markdown(result))
    for arm, row in result["arms"].items():
        auc = row["metrics"]["auc_macro"]
        print(f"{arm:28s} runs {row['runs_done']:2d}/{row['runs_planned']:2d}  macro AUC {auc['mean']:.3f} "
              f"[{auc['ci95'][0] if auc['ci95'][0] is not None else float('nan'):.3f}, "
              f"{auc['ci95'][1] if auc['ci95'][1] is not None else float('nan'):.3f}]")
    for name, text in result["reading"].items():
        print(f"{name}: {text}")


if __name__ == "__main__":
    main()
