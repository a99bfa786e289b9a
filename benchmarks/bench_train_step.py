"""Training-step throughput, same run, same device.

Teachers (``teacher-sf``): plain fp32 eager loop (baseline: each batch copied from pageable CPU tensors, one
host sync per loss term) vs the project's path (bf16 autocast on CUDA, the cohort resident on the GPU, one
host sync per step). Both call the same Stage.loss code.

Student: the previous path, which ran both frozen teachers (forward + node pooling) in every step, vs the
teacher cache, where the teachers ran once per case before training and a step runs only the student (the
one-off cache build is reported separately, per case). Both use the project's execution path.
Reports cases/s, the ratio, peak GPU memory and the share of the step wall time the GPU is busy.

    python benchmarks/bench_train_step.py --device cuda            # default grid 64 x 128 x 128
    python benchmarks/bench_train_step.py --device cpu --grid 32 64 64 --teacher-size 12 --depths 1 1 1 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reactkd.cohort.cache import TENSOR_FIELDS, CohortTensors
from reactkd.graph import build_regions, head_region_labels
from reactkd.models import build_model
from reactkd.training.config import TrainConfig
from reactkd.training.stages import make_stage
from reactkd.training.teacher_cache import compute_teacher_targets


def synthetic_batch_source(n: int, grid: tuple[int, int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """n cases with a liver ellipsoid and 1-3 tumours, their region volumes and random image content."""
    rng = np.random.default_rng(seed)
    d, h, w = grid
    z, y, x = np.indices(grid)
    node_index, n_nodes, region_labels = [], [], []
    for _ in range(n):
        labels = ((((z - d / 2) / (0.4 * d)) ** 2 + ((y - h / 2) / (0.4 * h)) ** 2 + ((x - w / 2) / (0.4 * w)) ** 2) <= 1)
        labels = labels.astype(np.uint8)
        for _t in range(rng.integers(1, 4)):
            c = rng.uniform(0.35, 0.65, 3) * grid
            r = rng.uniform(0.05, 0.1) * min(grid)
            labels[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r) & (labels > 0)] = 2
        regions = build_regions(labels, (2.0, 1.5, 1.5), liver_parcels=8)
        node_index.append(regions.node_index)
        region_labels.append(head_region_labels(regions))
        n_nodes.append(regions.n_nodes)
    return {"images": torch.rand(n, 3, *grid), "available": torch.from_numpy(rng.random((n, 3)) > 0.2) | torch.tensor([True, False, False]),
            "ct_hu": torch.rand(n, *grid) * 300 - 100, "node_index": torch.from_numpy(np.stack(node_index)),
            "region_labels": torch.from_numpy(np.stack(region_labels)),
            "n_nodes": torch.tensor(n_nodes), "labels": torch.from_numpy(rng.integers(0, 3, n)),
            "spacing": torch.tensor([[1.5, 1.5, 2.0]] * n),
            # the dose teacher's cached CT channels at four doses (cohort.doses; what its step reads)
            "dose_ct": torch.rand(n, 4, *grid)}


def as_cohort(source: dict) -> CohortTensors:
    return CohortTensors(**{name: source[name] for name in TENSOR_FIELDS},
                         case_ids=[str(i) for i in range(len(source["labels"]))])


def run(stage_name: str, source: dict, device: torch.device, optimised: bool, batch: int, steps: int,
        teacher_kwargs: dict, warmup: int = 2, cached: bool = True) -> dict:
    """``optimised``: the project's execution path; ``cached`` (student): teacher outputs precomputed."""
    torch.manual_seed(0)
    config = TrainConfig(amp=optimised, batch_size=batch, teacher=teacher_kwargs)
    teachers, build_s = [], None
    if stage_name == "student":
        teachers = [build_model("sf_teacher", **teacher_kwargs).to(device).eval(),
                    build_model("dose_teacher", **teacher_kwargs).to(device).eval()]
        for t in teachers:
            t.requires_grad_(False)
    targets = None
    if teachers and cached:
        start = time.perf_counter()
        targets = compute_teacher_targets(teachers, as_cohort(source), device, rgd_map=config.rgd_map).to(device)
        build_s = time.perf_counter() - start
    stage = make_stage(stage_name, config, targets)
    model = stage.model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = {k: v.to(device) for k, v in source.items()} if optimised else source
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=optimised and device.type == "cuda")
    n = len(source["labels"])

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        b = {k: v[idx.to(v.device)].to(device) for k, v in data.items()}
        if teachers and not cached:  # the previous path: both teachers run inside every step
            with autocast:
                stage.targets = compute_teacher_targets(teachers, as_cohort(b), device, rgd_map=config.rgd_map).to(device)
            b["case_index"] = torch.arange(len(idx), device=device)
        else:
            b["case_index"] = idx.to(device)
        with autocast:
            terms = stage.loss(model, b, generator, config)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        if optimised:
            torch.stack([t.detach().float() for t in terms.values()]).tolist()
        else:
            [float(t) for t in terms.values()]

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    path = "optimised" if optimised else "baseline fp32"
    if teachers:
        path = "teacher cache" if cached else "teachers every step"
    result = {"stage": stage_name, "path": path, "s_per_step": wall / steps, "cases_per_s": batch * steps / wall}
    if build_s is not None:
        result["cache_build_s_per_case"] = build_s / n
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if optimised:
            result["gpu_busy"] = gpu_busy_fraction(step, steps)
    return result


def gpu_busy_fraction(step, steps: int) -> float:
    """Sum of CUDA kernel time over the wall time of `steps` steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernel_us = sum(e.device_time for e in prof.events() if e.device_type.name == "CUDA")
    return min(kernel_us / 1e6 / wall, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--grid", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--teacher-size", type=int, default=48)
    parser.add_argument("--depths", type=int, nargs=4, default=(2, 2, 2, 2), help="Swin depths of the teachers")
    parser.add_argument("--stages", default="teacher-sf,student")
    args = parser.parse_args()
    device = torch.device(args.device)
    source = synthetic_batch_source(max(2 * args.batch, 8), tuple(args.grid))
    rows = []
    teacher = {"feature_size": args.teacher_size, "depths": list(args.depths)}
    for stage in args.stages.split(","):
        if stage == "student":
            base = run(stage, source, device, True, args.batch, args.steps, teacher, cached=False)
        else:
            base = run(stage, source, device, False, args.batch, args.steps, teacher)
        fast = run(stage, source, device, True, args.batch, args.steps, teacher)
        fast["speedup"] = fast["cases_per_s"] / base["cases_per_s"]
        rows += [base, fast]
        print(json.dumps(base), flush=True)
        print(json.dumps(fast), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"\n| stage | path | cases/s | s/step | ratio | peak GPU GiB | GPU busy |  ({name}, grid {args.grid}, batch {args.batch})")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['path']} | {r['cases_per_s']:.2f} | {r['s_per_step']:.3f} | {r.get('speedup', 1.0):.2f}x | "
              f"{r.get('peak_gpu_gib', float('nan')):.2f} | {r.get('gpu_busy', float('nan')):.0%} |")


if __name__ == "__main__":
    main()
