"""`reactkd synth`: write a synthetic dual-tracer PET/CT cohort and its manifest."""

from __future__ import annotations

import argparse

from reactkd.cohort.synth import write_cohort
from reactkd.output_paths import check_output


def run_synth(args: argparse.Namespace) -> None:
    check_output(args.out, folder=True)
    manifest = write_cohort(args.out, args.cases, size=args.size, seed=args.seed)
    print(f"wrote {args.cases} cases and {manifest}")
