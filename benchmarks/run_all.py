"""`make bench`: run every benchmark script in sequence and collect their tables in one markdown file.

CPU (default): modest settings that fit 2 CPU cores (about 15 minutes in all on an idle machine); the
result goes to benchmarks/results/latest-cpu.md with the date, the machine and each exact command.
GPU (--gpu, the `make bench-gpu` equivalent): the GPU commands below, into latest-gpu.md.

    .venv/bin/python benchmarks/run_all.py                   # all CPU benchmarks
    .venv/bin/python benchmarks/run_all.py --only classify,scaling
    .venv/bin/python benchmarks/run_all.py --list            # print the commands, run nothing
    .venv/bin/python benchmarks/run_all.py --gpu             # on a CUDA machine
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CPU_COMMANDS = {
    "classify": ["bench_classify.py"],
    "inference_process": ["bench_inference_process.py"],
    "scaling": ["bench_scaling.py"],
    "train_step": ["bench_train_step.py", "--device", "cpu", "--grid", "32", "64", "64", "--teacher-size", "12",
                   "--batch", "1", "--steps", "1"],
    "student_inference": ["bench_student_inference.py", "--device", "cpu", "--batch", "4", "--repeats", "2"],
    "rgd": ["bench_rgd.py", "--device", "cpu", "--repeats", "3", "--threads", "1"],
    "ldct": ["bench_ldct.py"],
    "preprocess": ["bench_preprocess.py", "--runs", "3"],
    "signal_design": ["signal_design.py", "--cases", "90", "--repeats", "1"],
}

GPU_COMMANDS = {
    "train_step": ["bench_train_step.py", "--device", "cuda"],
    "student_inference": ["bench_student_inference.py", "--device", "cuda", "--batch", "32"],
    "classify": ["bench_classify.py", "--device", "cuda", "--runs", "5", "--baseline-runs", "3"],
    "scaling": ["bench_scaling.py", "--device", "cuda", "--grids", "all", "--train-batch", "4", "--teacher-size",
                "48", "--train-steps", "4", "--train-warmup", "2", "--train-cap", "600",
                "--train-stages", "teacher-sf,teacher-dose,student"],
    "rgd": ["bench_rgd.py", "--device", "cuda"],
    "ldct": ["bench_ldct.py", "--device", "cuda", "--full"],
}


def command_line(argv: list[str]) -> str:
    return ".venv/bin/python " + shlex.join([f"benchmarks/{argv[0]}", *argv[1:]])


def machine_header() -> str:
    sys.path.insert(0, str(HERE))
    from bench_classify import machine_description

    return machine_description()


def run_one(argv: list[str], timeout: float) -> tuple[str, float, str]:
    """(stdout without raw JSON lines, wall seconds, failure note or '')."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return out, time.perf_counter() - start, f"stopped after {timeout:.0f} s"
    wall = time.perf_counter() - start
    # Raw JSON progress lines repeat what the tables show; keep the markdown readable.
    lines = [ln for ln in done.stdout.splitlines() if not ln.lstrip().startswith("{")]
    # Plain lines get a markdown hard break so they are not run together; table rows stay as they are.
    text = "\n".join(ln if not ln.strip() or ln.lstrip().startswith("|") else ln + "  " for ln in lines)
    note = ""
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        note = f"exit status {done.returncode}:\n\n```\n{tail}\n```"
    return text.strip(), wall, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run the GPU commands (needs CUDA)")
    parser.add_argument("--only", help="comma-separated benchmark names (see --list)")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per benchmark script")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default results/latest-{cpu,gpu}.md)")
    args = parser.parse_args()
    commands = GPU_COMMANDS if args.gpu else CPU_COMMANDS
    if args.only:
        unknown = set(args.only.split(",")) - set(commands)
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {sorted(commands)}")
        commands = {k: v for k, v in commands.items() if k in args.only.split(",")}
    if args.list:
        for name, argv in commands.items():
            print(f"{name}: {command_line(argv)}")
        return
    out = args.out or HERE / "results" / f"latest-{'gpu' if args.gpu else 'cpu'}.md"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = []
    for name, argv in commands.items():
        print(f"== {name}: {command_line(argv)}", flush=True)
        text, wall, note = run_one(argv, args.timeout)
        print(text + (f"\n{note}" if note else "") + f"\n({wall:.0f} s)\n", flush=True)
        sections.append(f"## {name}\n\ncommand: `{command_line(argv)}` ({wall:.0f} s)\n\n{text}\n"
                        + (f"\n**failed**: {note}\n" if note else ""))
    header = (f"# Benchmarks ({'GPU' if args.gpu else 'CPU'}), started {started}\n\n"
              f"machine at the end of the run: {machine_header()}\n\n"
              "Generated by `benchmarks/run_all.py`; every ratio compares paths measured in the same run.\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "\n" + "\n".join(sections))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
