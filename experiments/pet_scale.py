"""The PET normalisation of the demo packages, chosen on the inner validation split (never on test cases).

`make train-demo` trains one structure-function teacher per candidate scale, then this script keeps the
scale whose teacher reached the higher inner-validation macro AUC (`training.best_val_macro_auc` in each
package; a tie keeps the first candidate) and writes the config every later stage trains with.

    python experiments/pet_scale.py config --scale percentile --config demo.yaml --out build/x/config-percentile.yaml
    python experiments/pet_scale.py choose --config demo.yaml --out build/x/config.yaml \
        --chosen build/x/teacher-sf build/x/teacher-sf-liver build/x/teacher-sf-percentile
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml


def write_config(config: Path, scale: str, out: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data.setdefault("preprocessing", {})["pet_scale"] = scale
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {config} with preprocessing.pet_scale = {scale} (experiments/pet_scale.py)\n"
                   + yaml.safe_dump(data, sort_keys=False))


def choose(config: Path, out: Path, chosen: Path, candidates: list[Path]) -> dict:
    rows = []
    for folder in candidates:
        meta = json.loads((folder / "metadata.json").read_text())
        rows.append({"package": str(folder), "pet_scale": meta["preprocessing"]["pet_scale"],
                     "best_val_macro_auc": meta["training"]["best_val_macro_auc"],
                     "best_epoch": meta["training"]["best_epoch"], "n_val": meta["training"]["n_val"]})
    best = max(rows, key=lambda row: row["best_val_macro_auc"])  # max keeps the first of equal values
    for row in rows:
        print(f"{row['pet_scale']:>10}: inner-validation macro AUC {row['best_val_macro_auc']:.3f} "
              f"(epoch {row['best_epoch'] + 1}, {row['n_val']} cases){'  <- chosen' if row is best else ''}")
    write_config(config, best["pet_scale"], out)
    if chosen.exists():
        shutil.rmtree(chosen)
    shutil.copytree(best["package"], chosen)
    record = {"chosen": best["pet_scale"], "candidates": rows, "criterion": "inner-validation macro AUC"}
    (out.parent / "pet-scale-choice.json").write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="write the config with one PET scale")
    config.add_argument("--config", type=Path, required=True)
    config.add_argument("--scale", required=True)
    config.add_argument("--out", type=Path, required=True)
    pick = sub.add_parser("choose", help="keep the candidate with the best inner-validation AUC")
    pick.add_argument("--config", type=Path, required=True)
    pick.add_argument("--out", type=Path, required=True)
    pick.add_argument("--chosen", type=Path, required=True, help="where the chosen teacher is copied")
    pick.add_argument("candidates", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "config":
        write_config(args.config, args.scale, args.out)
    else:
        choose(args.config, args.out, args.chosen, args.candidates)


if __name__ == "__main__":
    main()
