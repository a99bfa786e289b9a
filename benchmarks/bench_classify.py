"""Warm `classify` of a full-size CT with masks on the CPU, end to end, against a reference-style baseline.

reactkd: Classifier.classify (preprocess: crop to the liver + resample to the model grid; one forward pass
giving logits and CBAM attention, plus one backward pass to the liver-referenced input for the Grad-CAM map
(HiResCAM; no weight gradients); region graph; both maps back onto the CT grid) + write_outputs(render=False) (the two NRRD maps, graph.json,
result.json, report.html). The optional overview.png + scene.mrb step (render_and_scene) is
measured in its own configuration, and the pictures (report + overview + scene) against how overview and
scene were made before (benchmarks/previous_render.py) in another, in the same run. Baseline (benchmarks/reference_pipeline.py): whole-volume resample to
64 x 224 x 224, SegResNet with decoder into a 28.9 M parameter linear head, Grad-CAM, map back, write.

Each configuration lives in its own subprocess (so peak RSS, read from VmHWM, belongs to it alone): it reads
the inputs and loads the model once; then the configurations take turns, one run each (one warm-up round,
then --runs / --baseline-runs timed runs, medians reported). Taking turns puts every configuration under the
same machine load, so the ratio stays fair on a busy machine.

    .venv/bin/python benchmarks/bench_classify.py                 # about 2-3 minutes on 2 idle cores
    .venv/bin/python benchmarks/bench_classify.py --runs 5 --model REACTKD/reactkd/data/models/reactkd-demo-student
    .venv/bin/python benchmarks/bench_classify.py --device cuda   # GPU latency, same table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as in every `reactkd` command (cli.main)
STEPS = ("preprocess", "forward_gradcam", "graph", "to_native")  # forward_gradcam: forward + Grad-CAM
TARGET_MS = 1000.0  # warm classify of a 512 x 512 x 150 CT, end to end, shipped student (issue 25)


# ----------------------------------------------------------------------------- helpers shared with bench_scaling
def rss_mib(field: str = "VmHWM") -> float:
    """VmHWM (peak) or VmRSS (current) of this process in MiB; getrusage's peak where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine_description() -> str:
    """CPU model, core count, torch version and threads, load average: enough to compare runs."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average {load:.1f}")


def make_default_package(folder: Path, grid: tuple[int, int, int]) -> Path:
    """An untrained package of the default student (16 filters, blocks 1-2-2-2): timing ignores the weights."""
    sys.path.insert(0, str(ROOT / "Testing"))
    from model_packages import make_package

    return make_package(folder, "student", grid=grid, init_filters=16, blocks_down=[1, 2, 2, 2])


def write_case(case_dir: Path, ct, mask) -> None:
    """Uncompressed NRRD so that reading the inputs costs little in the workers."""
    import SimpleITK as sitk

    case_dir.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(case_dir / "ct.nrrd"), useCompression=False)
    sitk.WriteImage(mask, str(case_dir / "mask.nrrd"), useCompression=False)


class Worker:
    """One configuration in its own interpreter (so its peak RSS is its own), driven one run at a time over
    stdin/stdout so that several configurations can take turns and see the same machine load."""

    def __init__(self, config: str, case_dir: Path, model: Path | None, device: str, timeout: float) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--case-dir", str(case_dir),
                   "--device", device]
        if model is not None:
            command += ["--model", str(model)]
        self.config, self.samples = config, []
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True)
        self.watchdog = threading.Timer(timeout, self.process.kill)  # a hung configuration must not hang the run
        self.watchdog.start()
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.process.wait()
        self.stderr.seek(0)
        tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {self.process.returncode}: {tail}")

    def run(self, keep: bool) -> None:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        sample = self._read()
        if keep:
            self.samples.append(sample)

    def finish(self) -> dict:
        self.process.stdin.write("done\n")
        self.process.stdin.flush()
        final = self._read()
        self.process.wait()
        self.watchdog.cancel()
        return {**self.info, **final, "runs": len(self.samples),
                "median_ms": {k: statistics.median(s[k] for s in self.samples) for k in self.samples[0]}}

    def close(self) -> None:
        self.watchdog.cancel()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_interleaved(plan: dict[str, int], case_dir: Path, model: Path | None, warmup: int, device: str,
                    timeout: float) -> dict[str, dict]:
    """Load every configuration of `plan` (name -> timed runs) in its own process, then run them in turns
    (warm-up round(s) first); returns per configuration its medians and peak RSS, or {'error': ...}."""
    workers, results = {}, {}
    try:
        for name in plan:
            try:
                workers[name] = Worker(name, case_dir, model, device, timeout)
            except RuntimeError as exc:
                results[name] = {"config": name, "error": str(exc)}
        for i in range(warmup + max(plan.values(), default=0)):
            for name, worker in list(workers.items()):
                if i >= warmup + plan[name]:
                    continue
                try:
                    worker.run(keep=i >= warmup)
                except (RuntimeError, OSError) as exc:
                    results[name] = {"config": name, "error": str(exc)}
                    worker.close()
                    del workers[name]
        for name, worker in workers.items():
            try:
                results[name] = worker.finish()
            except (RuntimeError, OSError) as exc:
                results[name] = {"config": name, "error": str(exc)}
    finally:
        for worker in workers.values():
            worker.close()
    return {name: results[name] for name in plan}


def run_worker(config: str, case_dir: Path, model: Path | None, runs: int, warmup: int, device: str,
               timeout: float) -> dict:
    """One configuration alone (used by bench_scaling)."""
    return run_interleaved({config: runs}, case_dir, model, warmup, device, timeout)[config]


# ----------------------------------------------------------------------------- worker (one configuration)
def worker(args: argparse.Namespace) -> None:
    import torch

    from reactkd.images.readers import read_image

    ct = read_image(args.case_dir / "ct.nrrd")
    mask = read_image(args.case_dir / "mask.nrrd", labels=True)  # as `reactkd classify` reads it
    out_root = Path(tempfile.mkdtemp(prefix="bench-classify-out-"))
    info: dict = {"config": args.worker, "ct_size": list(ct.GetSize())}
    if args.worker == "reference":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from reference_pipeline import ReferencePipeline, write_reference_outputs

        pipeline = ReferencePipeline(device=args.device)
        info["parameters"] = sum(p.numel() for p in pipeline.model.parameters())

        def once(out: Path) -> tuple[dict, float, float]:
            start = time.perf_counter()
            result = pipeline.classify(ct, mask)
            middle = time.perf_counter()
            write_reference_outputs(result, out)
            return result["timings_ms"], middle - start, time.perf_counter() - middle
    else:
        from reactkd.inference.classifier import Classifier
        from reactkd.inference.outputs import write_outputs

        classifier = Classifier(args.model, device=args.device)
        info["parameters"] = sum(p.numel() for p in classifier.model.parameters())
        info["grid"] = list(classifier.preprocess.grid)
        render = args.worker == "reactkd+render"
        if args.worker == "render-before":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from previous_render import previous_scene_outputs

        def once(out: Path) -> tuple[dict, float, float]:
            start = time.perf_counter()
            result = classifier.classify(ct, mask)
            middle = time.perf_counter()
            write_outputs(result, out, ct, mask, render=render)
            timings = dict(result.timings_ms)
            if args.worker == "render-before":  # the pictures as they were made before (no report)
                begin = time.perf_counter()
                previous_scene_outputs(result, out, ct, mask)
                timings["pictures"] = (time.perf_counter() - begin) * 1000
            elif render:  # the report's pictures, the overview and the scene
                timings["pictures"] = timings.get("report", 0.0) + timings.get("render_and_scene", 0.0)
            return timings, middle - start, time.perf_counter() - middle

    info["rss_loaded_mib"] = rss_mib("VmRSS")
    print(json.dumps(info), flush=True)
    for i, line in enumerate(sys.stdin):
        if line.strip() != "run":
            break
        timings, classify_s, write_s = once(out_root / f"run{i}")
        if args.device == "cuda":
            torch.cuda.synchronize()
        render_ms = timings.pop("render_and_scene", 0.0)
        pictures_ms = timings.pop("pictures", 0.0)
        extra_ms = pictures_ms if args.worker == "render-before" else render_ms
        sample = {**timings, "classify_wall": classify_s * 1000, "render_and_scene": render_ms,
                  "pictures": pictures_ms, "write": write_s * 1000 - extra_ms,
                  "end_to_end": (classify_s + write_s) * 1000 - extra_ms}
        print(json.dumps(sample), flush=True)
    shutil.rmtree(out_root, ignore_errors=True)
    final = {"peak_rss_mib": rss_mib("VmHWM")}
    if args.device == "cuda":
        final["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(final), flush=True)


# ----------------------------------------------------------------------------- report
def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(results: dict[str, dict], header: str, warmup: int) -> None:
    ours, base, render = (results.get(k, {}) for k in ("reactkd", "reference", "reactkd+render"))
    print(header + "\n")
    for r in results.values():
        if "error" in r:
            print(f"{r['config']}: not measured ({r['error']})")
    m_ours, m_base = ours.get("median_ms", {}), base.get("median_ms", {})
    print(f"| step (median ms) | reactkd | reference-style baseline |  (ours: {ours.get('runs', '-')} runs, "
          f"baseline: {base.get('runs', '-')} runs, after {warmup} warm-up)")
    print("|---|---:|---:|")
    for step in STEPS:
        print(f"| {step} | {fmt(m_ours.get(step))} | {fmt(m_base.get(step))} |")
    for key, name in (("classify_wall", "classify (wall)"), ("write", "write maps + JSON"),
                      ("end_to_end", "**end to end**")):
        print(f"| {name} | {fmt(m_ours.get(key))} | {fmt(m_base.get(key))} |")
    render_ms = render.get("median_ms", {}).get("render_and_scene")
    print(f"| render_and_scene (overview.png + scene.mrb, optional, own process) | {fmt(render_ms)} | - |")
    pictures(render, results.get("render-before", {}))
    print("\n| pipeline | end to end ms | ratio (baseline / ours) | peak RSS MiB | RSS after loading MiB | "
          "parameters |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = (("reactkd", ours), ("reference-style baseline", base),
            (f"reactkd + render (incl. render_and_scene, {render.get('runs', 0)} run)", render))
    for name, r in rows:
        if "median_ms" not in r:
            continue
        e2e = r["median_ms"]["end_to_end"] + r["median_ms"].get("render_and_scene", 0.0)
        # The render row adds outputs the baseline does not make: no ratio for it.
        ratio = None if "end_to_end" not in m_base or r is render else m_base["end_to_end"] / e2e
        peak_gpu = f" (GPU {r['peak_gpu_mib']:.0f})" if "peak_gpu_mib" in r else ""
        print(f"| {name} | {e2e:.0f} | {'-' if ratio is None else f'{ratio:.1f}x'} | {r['peak_rss_mib']:.0f}{peak_gpu} | "
              f"{r['rss_loaded_mib']:.0f} | {r['parameters'] / 1e6:.2f} M |")
    if "end_to_end" in m_ours:
        verdict = "met" if m_ours["end_to_end"] <= TARGET_MS else "NOT met"
        print(f"\ntarget: reactkd end to end <= {TARGET_MS:.0f} ms: {verdict} ({m_ours['end_to_end']:.0f} ms)")


PICTURES_TARGET_MS = 2000.0  # report pictures + overview + scene of a 512 x 512 x 150 CT (issue 26)


def pictures(now: dict, before: dict) -> None:
    """The pictures row: report + overview.png + scene.mrb now, against overview + scene as made before
    (benchmarks/previous_render.py), measured in the same run."""
    new, old = now.get("median_ms", {}).get("pictures"), before.get("median_ms", {}).get("pictures")
    if new is None or old is None:
        return
    verdict = "met" if new <= PICTURES_TARGET_MS else "NOT met"
    print(f"\npictures (report + overview + scene) {new:.0f} ms; before (overview + scene) {old:.0f} ms: "
          f"{old / new:.1f}x faster; target <= {PICTURES_TARGET_MS:.0f} ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of reactkd (median)")
    parser.add_argument("--baseline-runs", type=int, default=2, help="timed runs of the baseline (median)")
    parser.add_argument("--render-runs", type=int, default=1, help="timed runs with render; 0 skips it")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--model", type=Path, default=None,
                        help="model package; default: an untrained default student on --grid")
    parser.add_argument("--grid", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per configuration process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from reactkd.cohort.synth import generate_case

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        tmp = Path(tmp)
        case = generate_case(args.seed, 2, size="full")
        write_case(tmp / "case", case.ct, case.mask)
        model = args.model or make_default_package(tmp / "model", tuple(args.grid))
        configs = [("reactkd", args.runs)]
        if not args.no_baseline:
            configs.append(("reference", args.baseline_runs))
        if args.render_runs > 0:
            configs += [("reactkd+render", args.render_runs), ("render-before", args.render_runs)]
        results = run_interleaved(dict(configs), tmp / "case", model, args.warmup, args.device, args.timeout)
    ours = results["reactkd"]
    size = " x ".join(str(s) for s in case.ct.GetSize())
    header = (f"classify, CT {size} (spacing {', '.join(f'{s:.2f}' for s in case.ct.GetSpacing())} mm) with a "
              f"liver/tumour label map, device {args.device}; model {args.model or 'untrained default student'}, "
              f"grid {ours.get('grid', '-')}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
              f"machine: {machine_description()}")
    report(results, header, args.warmup)


if __name__ == "__main__":
    main()
