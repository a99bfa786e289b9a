"""Student inference: latency at batch 1 and throughput at a large batch, fp32 eager vs bf16 autocast.

    python benchmarks/bench_student_inference.py --device cuda --batch 32
    python benchmarks/bench_student_inference.py --device cpu --batch 4
"""

from __future__ import annotations

import argparse
import time

import torch

from reactkd.models import build_model


def ellipsoid_regions(batch: int, grid, device) -> torch.Tensor:
    """Region-head input: a liver ellipsoid (1) with one tumour (3) in a ring (2), as head_region_labels gives."""
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n, device=device) for n in grid), indexing="ij")
    liver = (z / 0.8) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 <= 1
    tumour = (z - 0.2) ** 2 + (y + 0.1) ** 2 + (x - 0.2) ** 2
    labels = torch.where(liver, 1, 0)
    labels = torch.where(liver & (tumour <= 0.12), 2, labels)
    labels = torch.where(liver & (tumour <= 0.05), 3, labels)
    return labels.to(torch.int16).expand(batch, *grid)


def timed(model, x, a, regions, device, bf16: bool, repeats: int) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        for _ in range(2):
            model(x, a, regions)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, a, regions).logits.float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build_model("student").to(device).eval()
    print(f"| batch | precision | latency ms | cases/s | ratio |  ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'})")
    print("|---|---|---|---|---|")
    for batch in (1, args.batch):
        x = torch.rand(batch, 3, *args.grid, device=device)
        a = torch.tensor([True, False, False], device=device).expand(batch, 3).clone()
        regions = ellipsoid_regions(batch, args.grid, device)
        base = timed(model, x, a, regions, device, False, args.repeats)
        rows = [("fp32", base)]
        if device.type == "cuda":
            rows.append(("bf16 autocast", timed(model, x, a, regions, device, True, args.repeats)))
        for name, t in rows:
            print(f"| {batch} | {name} | {t * 1000:.1f} | {batch / t:.1f} | {base / t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
