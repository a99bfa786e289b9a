"""`reactkd classify --manifest CSV --out DIR`: grade every case of a manifest into one results table.

The Slicer module's "classify all" runs the same command as a child process (`start_batch`), on a manifest
or on a folder of case folders (`manifest_from_folder`).

The manifest needs the columns case_id, ct and mask (pet_fdg, pet_act optional; other columns such as label
or patient_id are ignored). Paths are relative to the manifest's folder, or absolute. Each case's outputs go
to DIR/cases/<case_id>/ (what `reactkd classify` writes for one case) and a row to DIR/results.csv, which is
rewritten atomically after every case: a stopped run resumes where it stopped (cases already graded by the
same model are kept), a bad case is reported in its row and the others go on.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from reactkd.atomic import folder_lock, write_text_atomic
from reactkd.cohort.manifest import duplicated_columns
from reactkd.errors import ManifestError, ReactKDError
from reactkd.output_paths import check_output

RESULTS_FILE = "results.csv"
CASES_FOLDER = "cases"
REQUIRED_COLUMNS = ("case_id", "ct", "mask")
OPTIONAL_COLUMNS = ("pet_fdg", "pet_act")
#: Safe as a folder name on every platform: letters, digits, dot, dash, underscore; not "." or "..".
_CASE_ID = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$")


@dataclass
class GradingCase:
    """One manifest row: absolute paths (None = absent) and what was wrong with the row, if anything."""

    case_id: str
    line: int
    paths: dict[str, Path | None] = field(default_factory=dict)
    problem: str | None = None


def read_grading_manifest(path: str | Path) -> list[GradingCase]:
    """Rows of a grading manifest. A missing column or an unreadable file raises ManifestError; a bad row
    (missing file, duplicate or unsafe case_id) is returned with its `problem` so the others still run."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    duplicated = duplicated_columns(header)
    if missing or duplicated:
        raise ManifestError(f"{path}: " + "; ".join(
            ([f"missing column(s) {', '.join(missing)} (needs {', '.join(REQUIRED_COLUMNS)})"] if missing else [])
            + ([f"duplicated column(s) {', '.join(duplicated)}"] if duplicated else [])))
    columns = [name for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in header]
    cases, seen = [], {}
    for line, values in enumerate(reader, start=2):
        if not any(value.strip() for value in values):
            continue
        row = {name: (values[header.index(name)].strip() if header.index(name) < len(values) else "")
               for name in columns}
        case = GradingCase(row["case_id"], line)
        problems = []
        if not _CASE_ID.match(case.case_id):
            problems.append(f"case_id {case.case_id!r} is not usable as a folder name (letters, digits, . _ -)")
        elif case.case_id in seen:
            problems.append(f"duplicate case_id (first on line {seen[case.case_id]})")
        else:
            seen[case.case_id] = line
        for name in columns[1:]:
            cell = row[name]
            if not cell:
                if name in REQUIRED_COLUMNS:
                    problems.append(f"no {name}")
                case.paths[name] = None
                continue
            resolved = (path.parent / cell).resolve()
            if not resolved.exists():
                problems.append(f"{name} not found: {cell}")
            case.paths[name] = resolved
        case.problem = "; ".join(problems) or None
        cases.append(case)
    if not cases:
        raise ManifestError(f"{path}: manifest has no cases")
    return cases


def _load_previous(results: Path, model_sha: str) -> dict[str, dict]:
    """Rows of an earlier run into the same folder, by case; refuse one made with another model."""
    if not results.is_file():
        return {}
    try:
        rows = list(csv.DictReader(io.StringIO(results.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReactKDError(f"{results}: cannot read the earlier results ({exc}); use another --out") from None
    others = {row.get("model_sha256") for row in rows if row.get("status") == "ok"} - {model_sha}
    if others:
        raise ReactKDError(f"{results.parent} holds results of another model (sha256 {sorted(others)[0][:12]}...); "
                           "use another --out to grade with this one")
    return {row["case_id"]: row for row in rows if row.get("case_id")}


def _write_results(results: Path, rows: list[dict], class_names: list[str]) -> None:
    fields = ["case_id", "status", "grade", *[f"p_{name}" for name in class_names], "model_sha256", "inputs",
              "warnings", "error", "outputs"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(results, buffer.getvalue())


def grade_manifest(manifest: str | Path, out_dir: str | Path, model: str | Path | None = None, device: str = "auto",
                   render: bool = False, progress=None) -> tuple[int, list[dict]]:
    """Grade every case; returns (number graded now, all result rows). `progress(event)` gets one dict per
    case: {"event": "case", "index", "total", "case_id", "status", "grade" | "error"}."""
    from reactkd.inference.classifier import Classifier

    out_dir = check_output(out_dir, folder=True, inputs=[manifest, model], names=(RESULTS_FILE,))
    cases = read_grading_manifest(manifest)
    with folder_lock(out_dir, wait=False):  # a second batch into the same folder is refused, not interleaved
        return _grade(cases, out_dir, Classifier(model, device=device), render, progress)


def _grade(cases: list[GradingCase], out_dir: Path, classifier, render: bool, progress) -> tuple[int, list[dict]]:
    from reactkd.images.readers import read_image
    from reactkd.inference.outputs import OUTPUT_FILES, write_outputs

    class_names = list(classifier.metadata["class_names"])
    model_sha = str(classifier.metadata["sha256"])
    results = out_dir / RESULTS_FILE
    previous = _load_previous(results, model_sha)
    rows, graded = [], 0
    for index, case in enumerate(cases, start=1):
        folder = out_dir / CASES_FOLDER / case.case_id
        before = previous.get(case.case_id)
        if before and before.get("status") == "ok" and (folder / "result.json").is_file():
            rows.append(before)
            status = "kept"
        else:
            row = {"case_id": case.case_id, "model_sha256": model_sha}
            try:
                if case.problem:
                    raise ReactKDError(case.problem)
                check_output(folder, "case folder", folder=True, inputs=case.paths.values(), names=OUTPUT_FILES)
                images = {name: read_image(p, name=name, labels=name == "mask") if p else None
                          for name, p in case.paths.items()}
                result = classifier.classify(images["ct"], images["mask"], images.get("pet_fdg"), images.get("pet_act"))
                write_outputs(result, folder, images["ct"], images["mask"], images.get("pet_fdg"),
                              images.get("pet_act"), render=render)
                row.update(status="ok", grade=result.grade, inputs="+".join(result.inputs),
                           warnings=" | ".join(result.warnings), outputs=f"{CASES_FOLDER}/{case.case_id}",
                           **{f"p_{name}": f"{result.probabilities[name]:.6f}" for name in class_names})
                graded += 1
            except ReactKDError as exc:
                row.update(status="error", error=" | ".join(str(exc).splitlines()))
            rows.append(row)
            status = row["status"]
            _write_results(results, rows + [previous[c.case_id] for c in cases[index:] if c.case_id in previous],
                           class_names)
        if progress is not None:
            last = rows[-1]
            progress({"event": "case", "index": index, "total": len(cases), "case_id": case.case_id,
                      "status": status, **({"error": last["error"]} if last.get("status") == "error"
                                           else {"grade": last.get("grade")})})
    _write_results(results, rows, class_names)
    return graded, rows


def run_classify_batch(args) -> int:
    """The CLI handler: progress lines (or JSON events), a summary; returns the exit code, 2 when a case failed."""
    start = time.monotonic()

    def report(event: dict) -> None:
        if args.progress == "json":
            print(json.dumps(event), flush=True)
        elif args.progress != "none":
            detail = event.get("grade") or event.get("error")
            print(f"[{event['index']}/{event['total']}] {event['case_id']}: {event['status']} ({detail})", flush=True)

    graded, rows = grade_manifest(args.manifest, args.out, args.model, args.device, not args.no_render, report)
    failed = [row for row in rows if row.get("status") != "ok"]
    summary = (f"graded {graded} case(s) now, {len(rows) - len(failed) - graded} kept from an earlier run, "
               f"{len(failed)} failed, in {time.monotonic() - start:.0f} s; table: {Path(args.out) / RESULTS_FILE}")
    if args.progress == "json":
        print(json.dumps({"event": "done", "graded": graded, "failed": len(failed), "results": str(Path(args.out) / RESULTS_FILE)}),
              flush=True)
    else:
        print(summary)
    if failed:
        names = ", ".join(row["case_id"] for row in failed[:5]) + (" ..." if len(failed) > 5 else "")
        print(f"error: {len(failed)} of {len(rows)} case(s) failed ({names}); reasons in {Path(args.out) / RESULTS_FILE}",
              file=sys.stderr)
        return 2
    return 0
