"""Student inference: latency at batch 1 and throughput at a large batch, fp32 eager vs bf16 autocast.

    python benchmarks/bench_student_inference.py --device cuda --batch 32
    python benchmarks/bench_student_inference.py --device cpu --batch 4
"""

from __future__ import annotations

import argparse
import time

import torch

from reactkd.models import build_model


def timed(model, x, a, device, bf16: bool, repeats: int) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        for _ in range(2):
            model(x, a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x, a).logits.float().cpu()
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
        base = timed(model, x, a, device, False, args.repeats)
        rows = [("fp32", base)]
        if device.type == "cuda":
            rows.append(("bf16 autocast", timed(model, x, a, device, True, args.repeats)))
        for name, t in rows:
            print(f"| {batch} | {name} | {t * 1000:.1f} | {batch / t:.1f} | {base / t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
