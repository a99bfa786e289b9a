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

from reactkd.errors import ReactKDError, one_line
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


def _add_progress(command: argparse.ArgumentParser) -> None:
    command.add_argument("--progress", choices=("auto", "tqdm", "json", "none"), default="auto",
                         help="progress display: a bar (tqdm; auto on a terminal), JSON lines (json), or none")


def build_parser() -> argparse.ArgumentParser:
    """The `reactkd` parser: every command with a one-line help, every option with its help (a test walks it)."""
    parser = _Parser(prog="reactkd", description="REACT-KD: HCC grading from CT / PET-CT.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    synth = sub.add_parser("synth", help="generate a synthetic dual-tracer PET/CT cohort")
    synth.add_argument("--out", required=True, type=Path, help="folder for the cases and manifest.csv")
    synth.add_argument("--cases", type=_positive_int, default=30, help="number of cases (default: 30)")
    synth.add_argument("--size", choices=("small", "clinical", "full"), default="small",
                       help="image size: small (fast tests), clinical (<= 1 mm pixels, 5 mm slices: the dose "
                            "study) or full (a 512 x 512 x 150 CT grid)")
    synth.add_argument("--world", choices=("v2", "null", "v1"), default="v2",
                       help="v2 (default: calibrated to the clinical literature), null (v2 whose PET knows only "
                            "the recorded grade: a negative control) or v1 (the first cohort, kept reproducible)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed and world, same cohort)")
    _add_progress(synth)

    train = sub.add_parser("train", help="train a teacher or the student")
    train.add_argument("--stage", required=True, choices=STAGES, help="what to train")
    train.add_argument("--manifest", required=True, type=Path, help="training cohort CSV (case_id, label, ct, mask, ...)")
    train.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, logs, the model package")
    train.add_argument("--config", type=Path, help="training config YAML (default: the built-in defaults)")
    train.add_argument("--teacher-sf", type=Path, nargs="+",
                       help="the trained PET/CT teacher's package(s) (student stage): one per cross-fitting part "
                            "(teacher_targets cross_fitted, the default) or one (in_sample)")
    train.add_argument("--teacher-dose", type=Path, nargs="+",
                       help="the trained dose teacher's package(s) (student stage), as --teacher-sf")
    train.add_argument("--teacher-targets", choices=("cross_fitted", "in_sample", "oracle"),
                       help="override the config's teacher_targets (how the student's KD targets are made)")
    train.add_argument("--cross-fit-part", type=int, metavar="K",
                       help="teacher stages: train without part K of the fit cases (of the config's "
                            "cross_fit_folds), a cross-fitted teacher for the student's targets")
    train.add_argument("--fold", type=int, default=0, help="cross-validation fold held out for testing (default: 0)")
    train.add_argument("--folds", type=_positive_int, default=3, help="number of cross-validation folds (default: 3)")
    train.add_argument("--epochs", type=_positive_int, help="override the config's number of epochs")
    train.add_argument("--device", choices=DEVICES, default="auto", help="compute device (auto: CUDA when usable)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--seed", type=int, help="override the config's random seed")
    _add_progress(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a model package on a cohort")
    evaluate.add_argument("--manifest", required=True, type=Path, help="cohort CSV with labels")
    evaluate.add_argument("--model", required=True, type=Path, help="model package folder")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for the metrics report and plots")
    evaluate.add_argument("--doses", type=_fraction_list, default=[1.0, 0.5, 0.25, 0.1, 0.05],
                          help="simulated CT dose fractions, comma separated, each simulated on the native CT "
                               "(default: 1,0.5,0.25,0.1,0.05)")
    evaluate.add_argument("--modalities", default="ct,ct+fdg,ct+act,all",
                          help="input combinations to evaluate, comma separated (default: ct,ct+fdg,ct+act,all)")
    evaluate.add_argument("--device", choices=DEVICES, default="auto", help="compute device (auto: CUDA when usable)")
    evaluate.add_argument("--fold", type=int, help="evaluate only the test cases this fold held out in training "
                          "(must be the package's fold; refused when the manifest gives other cases)")
    evaluate.add_argument("--folds", type=_positive_int, help="with --fold (default: the package's)")
    _add_progress(evaluate)

    classify = sub.add_parser("classify", help="grade one case (or every case of a manifest) and write result, "
                              "attention maps, graph, scene")
    sources = classify.add_mutually_exclusive_group(required=True)
    sources.add_argument("--ct", type=Path, help="the CT in Hounsfield units (image file or DICOM series folder)")
    sources.add_argument("--manifest", type=Path, help="grade every case of this CSV (columns case_id, ct, and mask "
                         "or seg; pet_fdg, pet_act optional) into --out/results.csv and --out/cases/<case_id>/")
    classify.add_argument("--pet-fdg", type=Path, help="FDG PET in SUV, on any grid (optional)")
    classify.add_argument("--pet-act", type=Path, help="acetate PET in SUV, on any grid (optional)")
    masks = classify.add_mutually_exclusive_group()
    masks.add_argument("--mask", type=Path, help="label map: 0 background, 1 liver, 2 tumour")
    masks.add_argument("--seg", type=Path, help="DICOM SEG file with a liver segment and a tumour segment (named "
                       "tumour, tumor, mass, lesion or neoplasm), placed on the CT by its frame geometry")
    masks.add_argument("--liver", type=Path, help="binary liver mask (use with --tumor)")
    classify.add_argument("--tumor", "--tumour", dest="tumor", type=Path, help="binary tumour mask (with --liver)")
    classify.add_argument("--model", type=Path, help="model package folder (default: the shipped model)")
    classify.add_argument("--out", required=True, type=Path, help="output folder (result.json, attention maps, ...)")
    classify.add_argument("--device", choices=DEVICES, default="auto", help="compute device (auto: CUDA when usable)")
    classify.add_argument("--no-render", action="store_true", help="skip overview.png and scene.mrb")
    classify.add_argument("--set-level", type=float, default=None, metavar="LEVEL",
                          help="nominal coverage of the prediction set, strictly between 0 and 1 "
                               "(default: the level the model package was calibrated at, 0.9)")
    classify.add_argument("--progress", choices=("auto", "json", "none"), default="auto",
                          help="with --manifest: a line per case (auto) or one JSON event per case (json)")

    ldct = sub.add_parser("simulate-ldct", help="simulate a low-dose CT from a full-dose CT")
    ldct.add_argument("--ct", required=True, type=Path, help="the full-dose CT")
    ldct.add_argument("--dose", required=True, type=float, help="dose fraction in (0, 1], e.g. 0.25")
    ldct.add_argument("--out", required=True, type=Path, help="the low-dose CT file to write")
    ldct.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    ldct.add_argument("--device", choices=DEVICES, default="cpu", help="compute device (default: cpu)")

    seal = sub.add_parser("seal", help="seal a model package's metadata with a new checksum (after a reviewed edit "
                          "of metadata.json, or for a package saved before metadata checksums)")
    seal.add_argument("--model", required=True, type=Path, help="model package folder")

    sub.add_parser("serve", help="persistent classification process: JSON-line requests on stdin, events on "
                   "stdout (used by the Slicer module; protocol in reactkd/inference/server.py)")

    demo = sub.add_parser("demo", help="generate a full-size synthetic PET/CT case and classify it")
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo)")
    demo.add_argument("--device", choices=DEVICES, default="auto", help="compute device (auto: CUDA when usable)")
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
    except ReactKDError as exc:  # one line whatever the message holds: input text cannot forge a second
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {one_line(f'{where}{exc.strerror or exc}')} (nothing half-written was kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
