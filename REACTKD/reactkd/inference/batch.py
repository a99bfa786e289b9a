"""Batch grading (`reactkd classify --manifest CSV --out DIR`): every case of a manifest into one results table.

The Slicer module's "classify all" runs the same command as a child process
(`reactkd.inference.batch_client.start_batch`), on a manifest or on a folder of case folders
(`reactkd.cohort.manifest.manifest_from_folder`). The manifest is read by
`reactkd.cohort.manifest.read_grading_manifest`; the command-line handler is `reactkd.cli.classify`.

The manifest needs the columns case_id, ct and mask (pet_fdg, pet_act optional; other columns such as label
or patient_id are ignored). Paths are relative to the manifest's folder, or absolute. Each case's outputs go
to DIR/cases/<case_id>/ (what `reactkd classify` writes for one case) and a row to DIR/results.csv, which is
rewritten atomically after every case: a stopped run resumes where it stopped (cases already graded by the
same model are kept), a bad case is reported in its row and the others go on.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from reactkd.atomic import folder_lock, write_text_atomic
from reactkd.cohort.manifest import GradingCase, read_grading_manifest
from reactkd.errors import ReactKDError
from reactkd.output_paths import check_output

RESULTS_FILE = "results.csv"
CASES_FOLDER = "cases"


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
