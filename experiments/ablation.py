"""Ablation on the synthetic cohort with the project's own commands (patient-grouped folds x training seeds),
written to a markdown table.

Rows: SF teacher, dose teacher, CT-only student without KD, + logit KD, + RGD, full (both teachers, RGD,
modality dropout, PET channels available in training), and the head ablation (the no-KD student with the
paper's global head). Each is trained per fold and seed (the seed also draws the folds) and evaluated on that
fold's held-out test part (`reactkd evaluate --fold I`; the epoch was chosen on an inner split of the
training part), CT only for students and the dose teacher, PET/CT for the SF teacher. Also: macro AUC per
simulated dose, the share of Grad-CAM mass inside tumour + 5 mm ring on the test cases, and paired bootstrap
differences on the same cases (the mean of the per-fold AUCs, cases resampled jointly; per seed, and over all
seeds): every row against the no-KD student, and each addition against the row it adds to.

Runs accumulate in --out/ablation.json across invocations (a stopped run resumes from its checkpoints):

    python experiments/ablation.py --out build/ablation --cases 240 --config REACTKD/reactkd/configs/demo.yaml \
        --seeds 0 1
    python experiments/ablation.py --out build/ablation --table-only --json experiments/results/ablation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml
from compare_models import probabilities

from reactkd.atomic import write_bytes_atomic
from reactkd.cli.main import main as cli
from reactkd.cohort.folds import split_fold
from reactkd.cohort.manifest import read_manifest
from reactkd.evaluation.metrics import attention_share, paired_macro_auc_difference
from reactkd.images.readers import read_image
from reactkd.inference.classifier import Classifier

BASELINE = "student, CT only, no KD"
#: This ablation keeps the 2026-11-26 set-up: one teacher of each kind per fold (in-sample targets), RGD on the
#: deepest map, no CT-only share; the pre-registered study (experiments/kd_study.py) tests the newer defaults.
IN_SAMPLE = {"teacher_targets": "in_sample", "rgd_map": "deepest", "ct_only_share": 0.0}
STUDENTS = {  # name -> config overrides
    BASELINE: {"alpha": 0.0, "lambda_graph": 0.0, "student": {"in_channels": 1}},
    "+ logit KD": {"alpha": 0.7, "lambda_graph": 0.0, "student": {"in_channels": 1}, **IN_SAMPLE},
    "+ RGD": {"alpha": 0.7, "lambda_graph": 1.0, "student": {"in_channels": 1}, **IN_SAMPLE},
    "full (PET channels + modality dropout)": {"alpha": 0.7, "lambda_graph": 1.0, "student": {"in_channels": 3},
                                               **IN_SAMPLE},
    "no KD, global head": {"alpha": 0.0, "lambda_graph": 0.0, "head": "global", "student": {"in_channels": 1}},
}
#: The additions one at a time: (row before, row after).
LADDER = [(BASELINE, "+ logit KD"), ("+ logit KD", "+ RGD"), ("+ RGD", "full (PET channels + modality dropout)"),
          (BASELINE, "no KD, global head")]
CAM_CASES = 12  # test cases per fold whose Grad-CAM share is measured (classify costs about 0.3 s each)


def run(args: list[str]) -> None:
    code = cli(args)
    if code != 0:
        raise SystemExit(f"command failed ({code}): reactkd {' '.join(args)}")


def write_config(base: dict, overrides: dict, path: Path) -> Path:
    merged = {**base, **{k: v for k, v in overrides.items() if k != "student"}}
    merged["student"] = {**base.get("student", {}), **overrides.get("student", {})}
    path.write_text(yaml.safe_dump(merged))
    return path


def gradcam_share(model_dir: Path, records) -> float:
    """Mean share of the Grad-CAM mass inside tumour + 5 mm ring (CT only)."""
    classifier = Classifier(model_dir, device="cpu")
    shares = []
    for record in records:
        ct, mask = read_image(record.ct), read_image(record.mask)
        cam = sitk.GetArrayFromImage(classifier.classify(ct, mask).attention_gradcam)  # a copy: the result is temporary
        share = attention_share(cam, sitk.GetArrayViewFromImage(mask), ct.GetSpacing()[::-1])
        shares.append(0.0 if share is None else share)
    return float(np.mean(shares))


def test_probabilities(model_dir: Path, manifest: Path, fold: int, folds: int, seed: int):
    """(case ids, labels, probabilities) of a CT model on the fold's test part, for paired differences."""
    records = read_manifest(manifest)
    _, test = split_fold(records, fold, folds, seed=seed)
    subset = [records[i] for i in test]
    keep, labels, probs, _ = probabilities(model_dir, subset, "ct", manifest.resolve().parent / ".reactkd-cache")
    return [subset[i].case_id for i in keep], labels, probs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("build/ablation"))
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--seed", type=int, default=7, help="cohort seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training (and fold) seeds")
    parser.add_argument("--config", type=Path, default=Path("REACTKD/reactkd/configs/demo.yaml"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only-folds", type=int, nargs="*", help="run only these folds (e.g. 0)")
    parser.add_argument("--rows", nargs="*", help="student rows to run (default: all)")
    parser.add_argument("--teacher-epochs", type=int, nargs=2, default=[8, 6], metavar=("SF", "DOSE"),
                        help="epochs of the two teachers (default 8 6, as `make train-demo`)")
    parser.add_argument("--table-only", action="store_true", help="print the tables of --out/ablation.json, train nothing")
    parser.add_argument("--json", type=Path, help="with --table-only: also write the runs and paired figures here")
    args = parser.parse_args()
    if args.json and not args.table_only:
        parser.error("--json goes with --table-only (a run writes --out/ablation.json itself)")
    out = args.out
    settings = {"cases": args.cases, "cohort_seed": args.seed, "folds": args.folds, "config": str(args.config)}
    if args.table_only:  # paired differences recomputed from the kept per-case probabilities (partial runs too)
        results = json.loads((out / "ablation.json").read_text())
        print(table(add_pairs(results), results.get("settings", settings)))
        if args.json:
            args.json.write_text(json.dumps(results, separators=(",", ":")))  # compact: thousands of probabilities
        return
    manifest = out / "cohort/manifest.csv"
    if not manifest.exists():
        run(["synth", "--out", str(out / "cohort"), "--cases", str(args.cases), "--seed", str(args.seed)])
    base = yaml.safe_load(args.config.read_text())
    records = read_manifest(manifest)
    # Runs of earlier invocations (other folds or seeds, possibly another session) are kept and pooled.
    results: dict = json.loads((out / "ablation.json").read_text()) if (out / "ablation.json").exists() else {}
    results.setdefault("rows", {})
    kept = results.setdefault("settings", settings)
    if any(kept[k] != settings[k] for k in ("cases", "cohort_seed", "folds")):
        raise SystemExit(f"{out / 'ablation.json'} holds runs made with {kept}; these settings ({settings}) would "
                         "mix two designs: use another --out")
    students = {name: o for name, o in STUDENTS.items() if not args.rows or name in args.rows or name == BASELINE}
    start = time.time()
    for seed in args.seeds:
        for fold in args.only_folds if args.only_folds else range(args.folds):
            folder = out / f"seed{seed}" / f"fold{fold}"
            common = ["--manifest", str(manifest), "--fold", str(fold), "--folds", str(args.folds),
                      "--device", args.device, "--progress", "none"]
            models = {"SF teacher (PET/CT)": ("teacher-sf", folder / "teacher-sf", {}),
                      "dose teacher (CT)": ("teacher-dose", folder / "teacher-dose", {})}
            for name, overrides in students.items():
                models[name] = ("student", folder / name.split(",")[0].replace(" ", "_").replace("+", "plus")
                                .replace("(", "").replace(")", ""), overrides)
            for name, (stage, model_dir, overrides) in models.items():
                folder.mkdir(parents=True, exist_ok=True)
                config = write_config(base, {**overrides, "seed": seed}, folder / f"{model_dir.name}.yaml")
                if not (model_dir / "metadata.json").exists():
                    extra = []
                    if stage == "student" and (overrides.get("alpha", 0) > 0 or overrides.get("lambda_graph", 0) > 0):
                        extra = ["--teacher-sf", str(folder / "teacher-sf"), "--teacher-dose", str(folder / "teacher-dose")]
                    epochs = dict(zip(("teacher-sf", "teacher-dose"), args.teacher_epochs)).get(stage)
                    run(["train", "--stage", stage, "--out", str(model_dir), "--config", str(config), "--resume",
                         *common, *extra, *(["--epochs", str(epochs)] if epochs else [])])
                eval_dir = model_dir / "evaluation"
                if not (eval_dir / "metrics.json").exists():
                    modalities = "all" if stage == "teacher-sf" else "ct"
                    run(["evaluate", "--model", str(model_dir), "--out", str(eval_dir), "--modalities", modalities,
                         "--doses", "1,0.25", *common])
                metrics = json.loads((eval_dir / "metrics.json").read_text())
                row = {"seed": seed, "fold": fold, "folds": args.folds, "overall": metrics["sections"]["overall"],
                       "doses": metrics.get("doses", {})}
                if stage != "teacher-sf":
                    _, test_idx = split_fold(records, fold, args.folds, seed=seed)
                    row["gradcam_in_tumour_ring"] = gradcam_share(model_dir, [records[i] for i in test_idx[:CAM_CASES]])
                    ids, labels, probs = test_probabilities(model_dir, manifest, fold, args.folds, seed)
                    row["test_cases"] = {"ids": ids, "labels": np.asarray(labels).tolist(),
                                         "probs": np.round(probs, 6).tolist()}
                runs = [r for r in results["rows"].get(name, []) if (r["seed"], r["fold"]) != (seed, fold)]
                results["rows"][name] = [*runs, row]
                save(out / "ablation.json", results)  # partial results survive a stop
                print(f"[{time.time() - start:6.0f} s] seed {seed} fold {fold} {name}: macro AUC "
                      f"{row['overall']['auc_macro']}", flush=True)
    save(out / "ablation.json", add_pairs(results))
    print(table(results, results["settings"]))


def save(path: Path, results: dict) -> None:
    """Atomically: a run killed while writing (the end of a session) keeps the previous record whole."""
    write_bytes_atomic(path, json.dumps(results, indent=1).encode())


def pooled_test_cases(rows: dict, seed: int) -> dict[str, tuple[list, np.ndarray, np.ndarray, np.ndarray]]:
    """Per row: (case ids, labels, probabilities, fold of each case) on the seed's test parts pooled over its
    folds, sorted by case id so that two rows line up case by case. A case twice in one seed (runs of two
    fold designs) is an error: it would pair predictions of different models."""
    pooled: dict[str, dict] = {}
    for name, runs in rows.items():
        for run_ in (r for r in runs if r["seed"] == seed and "test_cases" in r):
            part = pooled.setdefault(name, {"ids": [], "labels": [], "probs": [], "folds": []})
            part["ids"] += run_["test_cases"]["ids"]
            part["labels"].append(np.asarray(run_["test_cases"]["labels"]))
            part["probs"].append(np.asarray(run_["test_cases"]["probs"]))
            part["folds"].append(np.full(len(run_["test_cases"]["ids"]), run_["fold"]))
    out = {}
    for name, part in pooled.items():
        if len(set(part["ids"])) != len(part["ids"]):
            raise ValueError(f"{name}, seed {seed}: a case appears in two of its runs (folds of two designs?)")
        order = np.argsort(part["ids"], kind="stable")
        out[name] = ([part["ids"][i] for i in order], np.concatenate(part["labels"])[order],
                     np.concatenate(part["probs"])[order], np.concatenate(part["folds"])[order])
    return out


def paired_rows(rows: dict, seeds: list[int], pairs: list[tuple[str, str]] | None = None,
                skipped: list[str] | None = None) -> dict:
    """Macro AUC of B minus A on the same test cases, the mean of the per-fold AUCs (each fold's model is
    ranked only against itself), with a paired bootstrap CI over cases, for each (A, B) in ``pairs``
    (default: every row against the no-KD student), keyed by B's name.

    Several seeds: the AUC is the mean over all their folds, and each resample draws cases once for all;
    the interval is conditional on these trained runs (it does not contain the training-seed variance,
    which the per-seed tables show). A pair is skipped, with its reason appended to ``skipped``, unless both
    rows were run on exactly the same cases, with the same labels, in every seed."""
    skipped = [] if skipped is None else skipped
    pooled = [pooled_test_cases(rows, seed) for seed in seeds]
    names = [name for name in pooled[0] if all(name in p for p in pooled)]
    if pairs is None:  # rows with per-case records (the SF teacher, scored on PET/CT, has none)
        pairs = [(BASELINE, name) for name, runs in rows.items()
                 if name != BASELINE and any("test_cases" in r for r in runs)]
    paired = {}
    for a, b in pairs:
        if a not in names or b not in names:
            if a in rows and b in rows:
                skipped.append(f"{b} vs {a}: no per-case record of one of them in every seed")
            continue
        ids, labels = pooled[0][a][0], pooled[0][a][1]
        if any(p[r][0] != ids or not np.array_equal(p[r][1], labels) for p in pooled for r in (a, b)) \
                or any(not np.array_equal(p[a][3], p[b][3]) for p in pooled):
            skipped.append(f"{b} vs {a}: not run on the same cases (a fold missing?)")
            continue
        # Scores are compared within each fold's model (groups), then averaged: the mean of per-fold AUCs.
        result = paired_macro_auc_difference(labels, np.stack([p[a][2] for p in pooled]),
                                             np.stack([p[b][2] for p in pooled]), 2000,
                                             groups=np.stack([p[a][3] for p in pooled]))
        if result["ci95"][0] is None:
            skipped.append(f"{b} vs {a}: a grade is missing from the pooled cases")
            continue
        paired[b] = {**result, "folds": sorted({r["fold"] for r in rows[b] if r["seed"] in seeds and "test_cases" in r})}
    return paired


def add_pairs(results: dict) -> dict:
    """Set the paired comparisons (against no-KD, and one addition at a time) of every training seed run so
    far and, with several seeds, over all of them; what could not be paired goes to ``not_paired``."""
    seeds = sorted({r["seed"] for runs in results["rows"].values() for r in runs})
    groups = {str(seed): [seed] for seed in seeds}
    if len(seeds) > 1:
        groups["all"] = seeds
    results["not_paired"] = {key: [] for key in groups}
    results["paired"] = {key: paired_rows(results["rows"], group, skipped=results["not_paired"][key])
                         for key, group in groups.items()}
    results["ladder"] = {key: paired_rows(results["rows"], group, LADDER, skipped=results["not_paired"][key])
                         for key, group in groups.items()}
    return results


def _paired_table(pairs: dict[str, tuple[str, dict]]) -> list[str]:
    lines = ["| row B | minus row A | B's AUC | A's AUC | difference [95 % CI] | share of resamples B not better "
             "| cases | folds |", "|---|---|---|---|---|---|---|---|"]
    for name, (reference, d) in pairs.items():
        lines.append(f"| {name} | {reference} | {d['auc_macro_b']:.3f} | {d['auc_macro_a']:.3f} | "
                     f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | "
                     f"{d['p_b_not_better']:.3f} | {d['n_cases']} | {', '.join(map(str, d.get('folds', [])))} |")
    return lines


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: dict, settings: dict) -> str:
    """Markdown tables of the runs; ``settings``: cases, cohort_seed, folds and config of the design."""
    rows = results["rows"]
    runs_done = sorted({(r["seed"], r["fold"]) for runs in rows.values() for r in runs})
    lines = [f"{settings['folds']}-fold patient-grouped cross-validation, runs (training seed, fold) {runs_done}, "
             f"{settings['cases']} synthetic cases (cohort seed {settings['cohort_seed']}), config "
             f"`{settings['config']}`; "
             "mean ± SD over the (seed, fold) runs on their held-out test parts; per-run 95 % bootstrap CIs below.",
             "", "| model | macro AUC | accuracy | macro F1 | ECE | AUC dose 1 | 0.25 | Grad-CAM in tumour + ring |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        overall = [r["overall"] for r in runs]
        doses = [_mean_sd([r["doses"].get(d, {}).get("auc_macro") for r in runs]) for d in ("1", "0.25")]
        cam = _mean_sd([r.get("gradcam_in_tumour_ring") for r in runs])
        lines.append(f"| {name} | {_mean_sd([o['auc_macro'] for o in overall])} | "
                     f"{_mean_sd([o['accuracy'] for o in overall])} | {_mean_sd([o['f1_macro'] for o in overall])} | "
                     f"{_mean_sd([o['ece'] for o in overall])} | " + " | ".join(doses) + f" | {cam} |")
    keys = sorted({(r["seed"], r["fold"]) for runs in rows.values() for r in runs})
    lines += ["", "Per run: macro AUC [95 % bootstrap CI] on the fold's test part.", "",
              "| model | " + " | ".join(f"seed {s} fold {f}" for s, f in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, runs in rows.items():
        by_key = {(r["seed"], r["fold"]): r["overall"] for r in runs}
        cells = []
        for key in keys:
            o = by_key.get(key)
            ci = (o or {}).get("ci95", {}).get("auc_macro")
            cells.append("-" if o is None else f"{o['auc_macro']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    before = dict((b, a) for a, b in LADDER)
    for key, what, reference in (("paired", "each row minus the CT-only no-KD student", lambda name: BASELINE),
                                 ("ladder", "one addition at a time, each row minus the row it adds to",
                                  before.get)):
        for seeds, paired in results.get(key, {}).items():
            if paired:
                who = ("All seeds (the mean over the seeds; the CI covers case sampling given these runs, the "
                       "seed-to-seed spread is in the per-seed tables)" if seeds == "all" else f"Seed {seeds}")
                lines += ["", f"{who}: {what}, on the same test cases; AUC = mean of the per-fold macro AUCs "
                          "(paired bootstrap over cases, 2000 resamples).", ""]
                lines += _paired_table({name: (reference(name), d) for name, d in paired.items()})
    for seeds, reasons in results.get("not_paired", {}).items():
        if reasons:
            lines += ["", f"Not paired ({'all seeds' if seeds == 'all' else 'seed ' + seeds}): "
                      + "; ".join(dict.fromkeys(reasons)) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
