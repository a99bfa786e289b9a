"""`reactkd synth`: write a synthetic dual-tracer PET/CT cohort and its manifest."""

from __future__ import annotations

import argparse
import sys

from reactkd.cohort.synth import write_cohort
from reactkd.output_paths import check_output
from reactkd.progress import Progress


def run_synth(args: argparse.Namespace) -> None:
    check_output(args.out, folder=True)
    progress = Progress(getattr(args, "progress", "none"))

    def report(done: int, total: int) -> None:
        progress.emit("case", done=done, total=total)
        if progress.mode == "tqdm" and (done == total or done % max(1, total // 20) == 0):
            print(f"synth: {done}/{total} cases", file=sys.stderr, flush=True)

    manifest = write_cohort(args.out, args.cases, size=args.size, seed=args.seed, world=args.world, progress=report)
    progress.done(out=str(manifest))
    print(f"wrote {args.cases} cases ({args.world} world, {args.size}) and {manifest}")
