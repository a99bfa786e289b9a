"""Ablation on the synthetic cohort with the project's own commands (3 folds), written to a markdown table.

Rows: SF teacher, dose teacher, CT-only student without KD, + logit KD, + RGD, full (both teachers, RGD,
modality dropout, PET channels available in training). Each is trained per fold and evaluated on that fold's
validation cases (`reactkd evaluate --fold I`), CT only for students and the dose teacher, PET/CT for the SF
teacher. Also: macro AUC per simulated dose, and the share of Grad-CAM mass inside the tumour with and
without RGD.

    python experiments/ablation.py --out build/ablation --cases 48 --config REACTKD/reactkd/configs/ablation.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from reactkd.cli import main as cli
from reactkd.inference import Classifier
from reactkd.io import read_image
from reactkd.manifest import read_manifest
from reactkd.training.folds import split_fold

STUDENTS = {  # name -> config overrides
    "student, CT only, no KD": {"alpha": 0.0, "lambda_graph": 0.0, "student": {"in_channels": 1}},
    "+ logit KD": {"alpha": 0.7, "lambda_graph": 0.0, "student": {"in_channels": 1}},
    "+ RGD": {"alpha": 0.7, "lambda_graph": 1.0, "student": {"in_channels": 1}},
    "full (PET channels + modality dropout)": {"alpha": 0.7, "lambda_graph": 1.0},
}


def run(args: list[str]) -> None:
    code = cli(args)
    if code != 0:
        raise SystemExit(f"command failed ({code}): reactkd {' '.join(args)}")


def write_config(base: dict, overrides: dict, path: Path) -> Path:
    merged = {**base, **{k: v for k, v in overrides.items() if k != "student"}}
    merged["student"] = {**base.get("student", {}), **overrides.get("student", {})}
    path.write_text(yaml.safe_dump(merged))
    return path


def gradcam_share_in_tumour(model_dir: Path, records) -> float:
    classifier = Classifier(model_dir, device="cpu")
    shares = []
    for record in records:
        ct, mask = read_image(record.ct), read_image(record.mask)
        cam = sitk.GetArrayFromImage(classifier.classify(ct, mask).attention_gradcam)  # a copy: the result is temporary
        tumour = sitk.GetArrayViewFromImage(mask) == 2
        shares.append(float(cam[tumour].sum() / max(cam.sum(), 1e-12)))
    return float(np.mean(shares))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("build/ablation"))
    parser.add_argument("--cases", type=int, default=48)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--config", type=Path, default=Path("REACTKD/reactkd/configs/ablation.yaml"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only-folds", type=int, nargs="*", help="run only these folds (e.g. 0)")
    parser.add_argument("--table-only", action="store_true", help="print the tables of --out/ablation.json, train nothing")
    args = parser.parse_args()
    out = args.out
    if args.table_only:
        print(table(json.loads((out / "ablation.json").read_text()), args))
        return
    manifest = out / "cohort/manifest.csv"
    if not manifest.exists():
        run(["synth", "--out", str(out / "cohort"), "--cases", str(args.cases), "--seed", str(args.seed)])
    base = yaml.safe_load(args.config.read_text())
    records = read_manifest(manifest)
    results: dict[str, list[dict]] = {}
    start = time.time()
    for fold in args.only_folds if args.only_folds else range(args.folds):
        folder = out / f"fold{fold}"
        common = ["--manifest", str(manifest), "--fold", str(fold), "--folds", str(args.folds), "--device", args.device,
                  "--progress", "none"]
        models = {"SF teacher (PET/CT)": ("teacher-sf", folder / "teacher-sf", {}),
                  "dose teacher (CT)": ("teacher-dose", folder / "teacher-dose", {})}
        for name, overrides in STUDENTS.items():
            models[name] = ("student", folder / name.split(",")[0].replace(" ", "_").replace("+", "plus")
                            .replace("(", "").replace(")", ""), overrides)
        for name, (stage, model_dir, overrides) in models.items():
            folder.mkdir(parents=True, exist_ok=True)
            config = write_config(base, overrides, folder / f"{model_dir.name}.yaml")
            if not (model_dir / "metadata.json").exists():
                extra = []
                if stage == "student":
                    extra = ["--teacher-sf", str(folder / "teacher-sf"), "--teacher-dose", str(folder / "teacher-dose")]
                run(["train", "--stage", stage, "--out", str(model_dir), "--config", str(config), "--resume", *common,
                     *extra])
            eval_dir = model_dir / "evaluation"
            if not (eval_dir / "metrics.json").exists():
                modalities = "all" if stage == "teacher-sf" else "ct"
                run(["evaluate", "--model", str(model_dir), "--out", str(eval_dir), "--modalities", modalities,
                     "--doses", "1,0.5,0.25,0.1", *common])
            metrics = json.loads((eval_dir / "metrics.json").read_text())
            row = {"fold": fold, "overall": metrics["sections"]["overall"], "doses": metrics.get("doses", {})}
            if name in ("+ logit KD", "+ RGD"):
                _, val_idx = split_fold(records, fold, args.folds, seed=base.get("seed", 0))
                row["gradcam_in_tumour"] = gradcam_share_in_tumour(model_dir, [records[i] for i in val_idx])
            results.setdefault(name, []).append(row)
            (out / "ablation.json").write_text(json.dumps(results, indent=1))  # partial results survive a stop
            print(f"[{time.time() - start:6.0f} s] fold {fold} {name}: macro AUC {row['overall']['auc_macro']}", flush=True)
    print(table(results, args))


def _mean_sd(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: dict, args) -> str:
    lines = [f"{args.folds}-fold cross-validation (folds run: {args.only_folds or 'all'}) on {args.cases} synthetic cases (seed {args.seed}), config `{args.config}`; "
             "mean ± SD over folds; per-fold 95% bootstrap CIs in ablation.json.", "",
             "| model | macro AUC | accuracy | macro F1 | AUC dose 1 | 0.5 | 0.25 | 0.1 | Grad-CAM in tumour |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        overall = [r["overall"] for r in rows]
        doses = [_mean_sd([r["doses"].get(d, {}).get("auc_macro") for r in rows]) for d in ("1", "0.5", "0.25", "0.1")]
        cam = _mean_sd([r.get("gradcam_in_tumour") for r in rows]) if "gradcam_in_tumour" in rows[0] else ""
        lines.append(f"| {name} | {_mean_sd([o['auc_macro'] for o in overall])} | "
                     f"{_mean_sd([o['accuracy'] for o in overall])} | {_mean_sd([o['f1_macro'] for o in overall])} | "
                     + " | ".join(doses) + f" | {cam} |")
    folds = sorted({r["fold"] for rows in results.values() for r in rows})
    lines += ["", "Per fold: macro AUC [95% bootstrap CI] on the fold's validation cases.", "",
              "| model | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for name, rows in results.items():
        by_fold = {r["fold"]: r["overall"] for r in rows}
        cells = []
        for f in folds:
            o = by_fold.get(f)
            ci = (o or {}).get("ci95", {}).get("auc_macro")
            cells.append("-" if o is None else f"{o['auc_macro']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
