"""Scaling: warm classify time against CT size, and student training-step time against the model grid.

Classify: one full-size synthetic case resampled (same field of view; CT linear, label map nearest) to
256^2 x 60, 512^2 x 150 and 512^2 x 300, each classified in a fresh subprocess (bench_classify's worker:
one warm-up, median of --runs, peak RSS) with the default student on its 64 x 128 x 128 grid.
Training: one student-stage step (student forward + backward, both teachers, KD, RGD, modality dropout;
bench_train_step's `run`, the project path) per grid, each in a fresh subprocess with a wall-time cap
(--train-cap): a grid that does not finish in time is reported as such, not extrapolated.

Writes a markdown table and a PNG plot to --out (default benchmarks/results/), and prints the table.

    .venv/bin/python benchmarks/bench_scaling.py                        # CPU, about 3 minutes on 2 idle cores
    .venv/bin/python benchmarks/bench_scaling.py --skip classify --grids all --train-cap 900   # + 64 x 224 x 224
    .venv/bin/python benchmarks/bench_scaling.py --device cuda --grids all --train-batch 4 --teacher-size 48 \
        --train-steps 4 --train-warmup 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_classify import machine_description, make_default_package, rss_mib, run_worker, write_case  # noqa: E402

CT_SIZES = ((256, 256, 60), (512, 512, 150), (512, 512, 300))  # x, y, z
TRAIN_GRIDS = {"small": ((32, 96, 96), (64, 128, 128)),  # D, H, W
               "all": ((32, 96, 96), (64, 128, 128), (64, 224, 224))}


def resampled_case(ct, mask, size_xyz: tuple[int, int, int]):
    """The same field of view on a grid of size_xyz (CT linear, label map nearest)."""
    import numpy as np
    import SimpleITK as sitk

    old_size = np.array(ct.GetSize(), float)
    old_spacing = np.array(ct.GetSpacing())
    spacing = old_spacing * old_size / np.array(size_xyz, float)
    direction = np.array(ct.GetDirection()).reshape(3, 3)
    # Keep the outer edge of the field of view where it was: the first voxel centre moves by half the change.
    origin = np.array(ct.GetOrigin()) + direction @ (0.5 * (spacing - old_spacing))

    def resample(image, interpolator, outside: float):
        return sitk.Resample(image, [int(s) for s in size_xyz], sitk.Transform(), interpolator, origin.tolist(),
                             spacing.tolist(), ct.GetDirection(), outside, image.GetPixelID())

    return resample(ct, sitk.sitkLinear, -1024.0), resample(mask, sitk.sitkNearestNeighbor, 0.0)


def train_worker(args: argparse.Namespace) -> None:
    """One training-step timing of one stage on one grid; prints a JSON line."""
    import torch
    from bench_train_step import run, synthetic_batch_source

    grid = tuple(args.train_worker)
    source = synthetic_batch_source(args.train_batch, grid)
    result = run(args.train_stages, source, torch.device(args.device), True, args.train_batch, args.train_steps,
                 {"feature_size": args.teacher_size}, warmup=args.train_warmup)
    result["peak_rss_mib"] = rss_mib("VmHWM")
    if args.device == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result), flush=True)


def run_train(grid, stage: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--train-worker", *map(str, grid), "--train-stages", stage,
               "--device", args.device, "--train-batch", str(args.train_batch), "--train-steps",
               str(args.train_steps), "--train-warmup", str(args.train_warmup), "--teacher-size", str(args.teacher_size)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.train_cap)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within the {args.train_cap:.0f} s cap"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"}
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - start}


def plot(classify_rows, train_rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    done = [(r["voxels"] / 1e6, r["median_ms"]["end_to_end"] / 1000) for r in classify_rows if "median_ms" in r]
    if done:
        x, y = zip(*done)
        left.plot(x, y, "o-")
        for r in classify_rows:
            if "median_ms" in r:
                left.annotate(r["label"], (r["voxels"] / 1e6, r["median_ms"]["end_to_end"] / 1000),
                              textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set(xlabel="CT voxels (millions)", ylabel="classify end to end (s)", title="classify vs CT size")
    left.set_ylim(bottom=0)
    left.set_xlim(0, max([r["voxels"] / 1e6 for r in classify_rows], default=1) * 1.25)
    for stage in dict.fromkeys(r["stage"] for r in train_rows):
        done = [(r["voxels"] / 1e6, r["s_per_step"]) for r in train_rows if "s_per_step" in r and r["stage"] == stage]
        if done:
            x, y = zip(*done)
            right.plot(x, y, "s-", label=stage)
    for r in train_rows:
        if "s_per_step" in r:
            right.annotate(r["label"], (r["voxels"] / 1e6, r["s_per_step"]), textcoords="offset points",
                           xytext=(4, 4), fontsize=8)
    if train_rows:
        right.legend(fontsize=8)
    right.set(xlabel="model grid voxels (millions)", ylabel="s per training step", title="training step vs grid")
    right.set_ylim(bottom=0)
    right.set_xlim(0, max([r["voxels"] / 1e6 for r in train_rows], default=1) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(classify_rows, train_rows, header: str) -> str:
    lines = [header, "", "| CT size (x y z) | voxels (M) | classify end to end ms | preprocess | forward + Grad-CAM | "
             "graph | to_native | write | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in classify_rows:
        if "median_ms" not in r:
            lines.append(f"| {r['label']} | {r['voxels'] / 1e6:.1f} | not measured: {r['error']} |")
            continue
        m = r["median_ms"]
        lines.append(f"| {r['label']} | {r['voxels'] / 1e6:.1f} | {m['end_to_end']:.0f} | "
                     + " | ".join(f"{m[k]:.0f}" for k in ("preprocess", "forward_gradcam", "graph", "to_native",
                                                          "write")) + f" | {r['peak_rss_mib']:.0f} |")
    lines += ["", "| stage | grid (D H W) | voxels (M) | s per step | cases/s | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|"]
    for r in train_rows:
        if "s_per_step" not in r:
            lines.append(f"| {r['stage']} | {r['label']} | {r['voxels'] / 1e6:.2f} | not measured: {r['error']} | - | - |")
            continue
        gpu = f" (GPU {r['peak_gpu_gib']:.1f} GiB)" if "peak_gpu_gib" in r else ""
        lines.append(f"| {r['stage']} | {r['label']} | {r['voxels'] / 1e6:.2f} | {r['s_per_step']:.2f} | {r['cases_per_s']:.3f} | "
                     f"{r['peak_rss_mib']:.0f}{gpu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=2, help="timed classify runs per CT size (median)")
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=1)
    parser.add_argument("--train-warmup", type=int, default=0,
                        help="untimed steps first; 0 suits the CPU (first and second step take the same time), "
                             "use 2 on CUDA")
    parser.add_argument("--grids", choices=tuple(TRAIN_GRIDS), default="small",
                        help="training grids: 'small' leaves out 64 x 224 x 224 (minutes per step on 2 CPU cores)")
    parser.add_argument("--teacher-size", type=int, default=12)
    parser.add_argument("--train-stages", default="student",
                        help="comma-separated stages to time per grid (teacher-sf, teacher-dose, student)")
    parser.add_argument("--train-cap", type=float, default=120, help="seconds allowed per training grid")
    parser.add_argument("--skip", choices=("classify", "train"), help="leave one part out")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--train-worker", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        train_worker(args)
        return

    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    classify_rows, train_rows = [], []
    if args.skip != "classify":
        from reactkd.cohort.synth import generate_case

        case = generate_case(2025, 2, size="full")
        with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
            tmp = Path(tmp)
            model = make_default_package(tmp / "model", (64, 128, 128))
            for size in CT_SIZES:
                ct, mask = resampled_case(case.ct, case.mask, size)
                write_case(tmp / "x".join(map(str, size)), ct, mask)
                result = run_worker("reactkd", tmp / "x".join(map(str, size)), model, args.runs, 1, args.device, 600)
                result.update(label=f"{size[0]}^2 x {size[2]}", voxels=size[0] * size[1] * size[2])
                classify_rows.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)
    if args.skip != "train":
        for stage in args.train_stages.split(","):
            for grid in TRAIN_GRIDS[args.grids]:
                result = run_train(grid, stage, args)
                result.update(stage=stage, label=" x ".join(map(str, grid)), voxels=grid[0] * grid[1] * grid[2])
                train_rows.append(result)
                print(json.dumps(result), flush=True)

    # Trailing double spaces: markdown line breaks.
    header = (f"scaling, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, device {args.device}  \n"
              f"machine: {machine_description()}  \n"
              f"classify: untrained default student on 64 x 128 x 128, median of {args.runs} after 1 warm-up; "
              f"training: stages {args.train_stages}, batch {args.train_batch}, {args.train_steps} timed step(s) after "
              f"{args.train_warmup} warm-up, teachers feature size {args.teacher_size}, cap {args.train_cap:.0f} s per grid")
    text = table(classify_rows, train_rows, header)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}-{args.device}-scaling" + {None: "", "classify": "-train", "train": "-classify"}[args.skip]
    (args.out / f"{name}.md").write_text(text + "\n")
    plot(classify_rows, train_rows, args.out / f"{name}.png")
    print(f"\nwritten: {args.out / (name + '.md')}, {args.out / (name + '.png')}")


if __name__ == "__main__":
    main()
