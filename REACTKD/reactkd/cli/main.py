"""Command line: `reactkd synth|train|evaluate|classify|simulate-ldct|demo|serve|seal` (outputs: the README, "Command line").

Exit 0 on success; for bad input exit 2 with one `error: ...` line on stderr and no traceback. Heavy modules
are imported inside the handlers so `reactkd --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

from reactkd.errors import ReactKDError
from reactkd.vocabulary import STAGES

DEVICES = ("auto", "cpu", "cuda")
#: OS errors that are about the user's disk or paths, not a bug: reported as one `error:` line.
_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                       errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _fraction_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"doses must be fractions in (0, 1], got {text!r}")
    return values


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's error format: one `error: ...` line (no usage block), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reactkd", description="REACT-KD: HCC grading from CT / PET-CT.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic dual-tracer PET/CT cohort")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--cases", type=_positive_int, default=30)
    synth.add_argument("--size", choices=("small", "full"), default="small")
    synth.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train a teacher or the student")
    train.add_argument("--stage", required=True, choices=STAGES)
    train.add_argument("--manifest", required=True, type=Path)
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--config", type=Path)
    train.add_argument("--teacher-sf", type=Path)
    train.add_argument("--teacher-dose", type=Path)
    train.add_argument("--fold", type=int, default=0)
    train.add_argument("--folds", type=_positive_int, default=3)
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--seed", type=int)
    train.add_argument("--progress", choices=("auto", "tqdm", "json", "none"), default="auto")

    evaluate = sub.add_parser("evaluate", help="evaluate a model package on a cohort")
    evaluate.add_argument("--manifest", required=True, type=Path)
    evaluate.add_argument("--model", required=True, type=Path)
    evaluate.add_argument("--out", required=True, type=Path)
    evaluate.add_argument("--doses", type=_fraction_list, default=[1.0, 0.5, 0.25, 0.1])
    evaluate.add_argument("--modalities", default="ct,ct+fdg,ct+act,all")
    evaluate.add_argument("--device", choices=DEVICES, default="auto")
    evaluate.add_argument("--fold", type=int, help="evaluate only the test cases this fold held out in training "
                          "(must be the package's fold; refused when the manifest gives other cases)")
    evaluate.add_argument("--folds", type=_positive_int, help="with --fold (default: the package's)")
    evaluate.add_argument("--progress", choices=("auto", "tqdm", "json", "none"), default="auto")

    classify = sub.add_parser("classify", help="grade one case (or every case of a manifest) and write result, "
                              "attention maps, graph, scene")
    sources = classify.add_mutually_exclusive_group(required=True)
    sources.add_argument("--ct", type=Path)
    sources.add_argument("--manifest", type=Path, help="grade every case of this CSV (columns case_id, ct, mask; "
                         "pet_fdg, pet_act optional) into --out/results.csv and --out/cases/<case_id>/")
    classify.add_argument("--pet-fdg", type=Path)
    classify.add_argument("--pet-act", type=Path)
    masks = classify.add_mutually_exclusive_group()
    masks.add_argument("--mask", type=Path, help="label map: 0 background, 1 liver, 2 tumour")
    masks.add_argument("--liver", type=Path, help="binary liver mask (use with --tumor)")
    classify.add_argument("--tumor", "--tumour", dest="tumor", type=Path)
    classify.add_argument("--model", type=Path, help="model package folder (default: the shipped model)")
    classify.add_argument("--out", required=True, type=Path)
    classify.add_argument("--device", choices=DEVICES, default="auto")
    classify.add_argument("--no-render", action="store_true", help="skip overview.png and scene.mrb")
    classify.add_argument("--progress", choices=("auto", "json", "none"), default="auto",
                          help="with --manifest: a line per case (auto) or one JSON event per case (json)")

    ldct = sub.add_parser("simulate-ldct", help="simulate a low-dose CT from a full-dose CT")
    ldct.add_argument("--ct", required=True, type=Path)
    ldct.add_argument("--dose", required=True, type=float)
    ldct.add_argument("--out", required=True, type=Path)
    ldct.add_argument("--seed", type=int, default=0)
    ldct.add_argument("--device", choices=DEVICES, default="cpu")

    seal = sub.add_parser("seal", help="seal a model package's metadata with a new checksum (after a reviewed edit "
                          "of metadata.json, or for a package saved before metadata checksums)")
    seal.add_argument("--model", required=True, type=Path)

    sub.add_parser("serve", help="persistent classification process: JSON-line requests on stdin, events on "
                   "stdout (used by the Slicer module; protocol in reactkd/inference/server.py)")

    demo = sub.add_parser("demo", help="generate a full-size synthetic PET/CT case and classify it")
    demo.add_argument("--out", type=Path, default=Path("demo"))
    demo.add_argument("--device", choices=DEVICES, default="auto")
    return parser


#: command -> (module, handler): one dispatch table. Handlers are imported when their command runs, so
#: `reactkd --help` stays fast; a handler returns None (exit 0) or its exit code.
COMMANDS = {
    "synth": ("reactkd.cli.synth", "run_synth"),
    "train": ("reactkd.cli.train", "run_train"),
    "evaluate": ("reactkd.cli.evaluate", "run_evaluate"),
    "classify": ("reactkd.cli.classify", "run_classify"),
    "simulate-ldct": ("reactkd.cli.simulate_ldct", "run_simulate_ldct"),
    "seal": ("reactkd.cli.seal", "run_seal"),
    "serve": ("reactkd.inference.server", "serve"),
    "demo": ("reactkd.cli.demo", "run_demo"),
}


def _handler(command: str):
    module, name = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    # PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set before its first
    # large allocation: a 64 x 128 x 128 student forward then takes ~7x fewer page faults and runs ~1.3x faster
    # (THP in "madvise" mode). Set here, in processes reactkd owns, never at import inside Slicer.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    args = build_parser().parse_args(argv)
    if args.command == "serve":  # owns its stdout protocol and its errors
        return _handler("serve")()
    try:
        code = _handler(args.command)(args)
        if isinstance(code, int):
            return code
    except ReactKDError as exc:
        message = " | ".join(line for line in str(exc).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc} (nothing half-written was kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
