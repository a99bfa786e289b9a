"""Batch grading (`reactkd classify --manifest CSV --out DIR`): every case of a manifest into one results table.

The Slicer module's "classify all" runs the same command as a child process
(`reactkd.inference.batch_client.start_batch`), on a manifest or on a folder of case folders
(`reactkd.cohort.manifest.manifest_from_folder`). The manifest is read by
`reactkd.cohort.manifest.read_grading_manifest`; the command-line handler is `reactkd.cli.classify`.

The manifest needs the columns case_id, ct and mask (pet_fdg, pet_act optional; other columns such as label
or patient_id are ignored). Paths are relative to the manifest's folder, or absolute. Each case's outputs go
to DIR/cases/<case_id>/ (what `reactkd classify` writes for one case) and a row to DIR/results.csv. Each row
records what was graded: the model's sha256, the resolved input paths and `input_fingerprint` (see
`input_fingerprint`). A rerun into the same DIR keeps a graded row only when all of these still match (rows
of older tables, without a fingerprint, are graded again); a bad case is reported in its row and the others
go on. Every text cell is neutralised against spreadsheet formulas (`neutralised`).

results.csv is written once at the start with the rows kept, then one line is appended per graded case, and
it is put in manifest order (one atomic rewrite) at the end: linear in the rows. A run stopped at any moment
leaves a table of the rows done so far, never one that looks complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

from reactkd.atomic import folder_lock, write_text_atomic
from reactkd.cohort.manifest import GradingCase, read_grading_manifest
from reactkd.errors import ReactKDError, one_line
from reactkd.images.image_files import image_files
from reactkd.output_paths import check_output

RESULTS_FILE = "results.csv"
CASES_FOLDER = "cases"
INPUT_COLUMNS = ("ct", "mask", "seg", "pet_fdg", "pet_act")
FINGERPRINT_COLUMN = "input_fingerprint"
#: OWASP's CSV-injection rule: a cell starting with one of these is a formula to a spreadsheet (LF added).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralised(value) -> str:
    """The cell as results.csv stores it: a leading = + - @ tab or CR gets a single quote in front, so a
    spreadsheet shows it as text. Idempotent, so kept rows are written back unchanged."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in _FORMULA_STARTS else text


def input_fingerprint(paths: dict[str, Path | None]) -> str:
    """sha256 over (column, path, size, mtime_ns) of every file each input reads (`image_files`: a DICOM
    folder's files, a detached header's data files). Size and mtime, not a checksum of the contents: a resume then
    stats the files instead of reading every image again (thousands of CTs are hundreds of GB); an edit that
    keeps both the size and the nanosecond mtime goes unnoticed."""
    entries = []
    for column in INPUT_COLUMNS:
        if paths.get(column) is not None:
            try:
                for file in image_files(paths[column], column):
                    stat = file.stat()
                    entries.append([column, str(file), stat.st_size, stat.st_mtime_ns])
            except OSError as exc:
                raise ReactKDError(f"{column} {paths[column]}: cannot read ({exc.strerror or exc})") from None
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _load_previous(results: Path, model_sha: str) -> dict[str, dict]:
    """Rows of an earlier run into the same folder, by (stored) case id; refuse one made with another model."""
    if not results.is_file():
        return {}
    try:
        rows = list(csv.DictReader(io.StringIO(results.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReactKDError(f"{results}: cannot read the earlier results ({exc}); use another --out") from None
    # A line cut short by a crash lacks its last cells (the fingerprint last of all): ignored, so graded again.
    rows = [row for row in rows if None not in row.values()]
    others = {row.get("model_sha256") for row in rows if row.get("status") == "ok"} - {model_sha}
    if others:
        raise ReactKDError(f"{results.parent} holds results of another model (sha256 {sorted(others)[0][:12]}...); "
                           "use another --out to grade with this one")
    return {row["case_id"]: row for row in rows if row.get("case_id")}


def _check_case_folders(cases: list[GradingCase], out_dir: Path) -> None:
    """Before any work: no output of the batch may be (or replace) an input of any row; a row whose folder
    would is refused in its row, an input where results.csv goes refuses the batch. Inputs are indexed by
    resolved path and by file identity (hard links), so this stays linear in the rows."""
    from reactkd.inference.outputs import OUTPUT_FILES

    by_path: dict[Path, list[Path]] = {}
    by_identity: dict[tuple[int, int], list[Path]] = {}
    for path in (p for case in cases for p in case.paths.values() if p is not None):
        by_path.setdefault(Path(os.path.realpath(path)), []).append(path)
        try:
            stat = os.stat(path)
        except OSError:
            continue
        by_identity.setdefault((stat.st_dev, stat.st_ino), []).append(path)

    def inputs_at(folder: Path, names) -> list[Path]:
        found = list(by_path.get(Path(os.path.realpath(folder)), []))
        for target in (folder / name for name in names):
            found += by_path.get(Path(os.path.realpath(target)), [])
            try:
                stat = os.stat(target)
            except OSError:
                continue
            found += by_identity.get((stat.st_dev, stat.st_ino), [])
        return found

    check_output(out_dir, folder=True, inputs=inputs_at(out_dir, (RESULTS_FILE,)), names=(RESULTS_FILE,))
    for case in cases:
        if case.problem is None:
            folder = out_dir / CASES_FOLDER / case.case_id
            try:
                check_output(folder, "case folder", folder=True, inputs=inputs_at(folder, OUTPUT_FILES),
                             names=OUTPUT_FILES)
            except ReactKDError as exc:
                case.problem = str(exc)


class _ResultsTable:
    """results.csv: rewritten once with the rows kept, then a line appended (and flushed) per graded row;
    fsynced when the run ends, however it ends. A failed append is cut off again."""

    def __init__(self, path: Path, fields: list[str], kept: list[dict]) -> None:
        self.path, self.fields = path, fields
        write_text_atomic(path, self._lines([dict(zip(fields, fields)), *kept]))
        self.file = open(path, "ab", buffering=0)

    def _lines(self, rows: list[dict]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, lineterminator="\n", extrasaction="ignore")
        # Paths that are not UTF-8 (possible on POSIX) are stored with backslash escapes, never refused.
        writer.writerows({name: neutralised(row.get(name)).encode("utf-8", "backslashreplace").decode("utf-8")
                          for name in self.fields} for row in rows)
        return buffer.getvalue()

    def append(self, row: dict) -> None:
        data, start = self._lines([row]).encode("utf-8"), self.file.tell()
        try:
            view = memoryview(data)
            while view:
                view = view[self.file.write(view):]
        except BaseException:
            os.ftruncate(self.file.fileno(), start)
            raise

    def close(self, final: list[dict] | None) -> None:
        """Make the table durable; with `final`, in that order (one atomic rewrite, only when it differs)."""
        try:
            os.fsync(self.file.fileno())
        finally:
            self.file.close()
        if final is not None:
            text = self._lines([dict(zip(self.fields, self.fields)), *final])
            if self.path.read_bytes() != text.encode("utf-8"):
                write_text_atomic(self.path, text)


def grade_manifest(manifest: str | Path, out_dir: str | Path, model: str | Path | None = None, device: str = "auto",
                   render: bool = False, progress=None, set_level: float | None = None) -> tuple[int, list[dict]]:
    """Grade every case; returns (number graded now, all result rows). `progress(event)` gets one dict per
    case: {"event": "case", "index", "total", "case_id", "status", "grade" | "error"}. `set_level`: the
    prediction sets' nominal coverage (default: the package's)."""
    from reactkd.inference.classifier import Classifier

    out_dir = check_output(out_dir, folder=True, inputs=[manifest, model], names=(RESULTS_FILE,))
    cases = read_grading_manifest(manifest)
    with folder_lock(out_dir, wait=False):  # a second batch into the same folder is refused, not interleaved
        _check_case_folders(cases, out_dir)
        return _grade(cases, out_dir, Classifier(model, device=device, set_level=set_level), render, progress)


def _kept_row(case: GradingCase, before: dict | None, model_sha: str, out_dir: Path, level: str) -> dict | None:
    """The earlier row of this case when it graded exactly these inputs with this model (and prediction-set
    level), else None."""
    if (case.problem or not before or before.get("status") != "ok" or before.get("model_sha256") != model_sha
            or before.get("prediction_set_level", "") != level or not (out_dir / CASES_FOLDER / case.case_id / "result.json").is_file()):
        return None
    try:
        fingerprint = input_fingerprint(case.paths)
    except ReactKDError:
        return None
    return {**before, "case_id": case.case_id} if before.get(FINGERPRINT_COLUMN) == fingerprint else None


def set_columns(result, level: str) -> dict[str, str]:
    """The prediction-set cells of a row: the grades ("moderate or poor"), the level, and refer (yes/no);
    empty when the package has no calibration (result.json says why)."""
    if result.prediction_set is None:
        return {"prediction_set": "", "prediction_set_level": "", "refer": ""}
    return {"prediction_set": " or ".join(result.prediction_set), "prediction_set_level": level,
            "refer": "yes" if len(result.prediction_set) > 1 else "no"}


def _grade(cases: list[GradingCase], out_dir: Path, classifier, render: bool, progress) -> tuple[int, list[dict]]:
    from reactkd.images.dicom_seg import read_dicom_seg
    from reactkd.images.readers import read_image
    from reactkd.inference.outputs import write_outputs

    class_names = list(classifier.metadata["class_names"])
    model_sha = str(classifier.metadata["sha256"])
    fields = ["case_id", "status", "grade", *[f"p_{name}" for name in class_names], "prediction_set",
              "prediction_set_level", "refer", "model_sha256", "inputs", "warnings", "error", "outputs",
              *INPUT_COLUMNS, FINGERPRINT_COLUMN]
    level = f"{classifier.conformal.level:g}" if classifier.conformal is not None else ""
    previous = _load_previous(out_dir / RESULTS_FILE, model_sha)
    kept = {case.case_id: row for case in cases
            if (row := _kept_row(case, previous.get(neutralised(case.case_id)), model_sha, out_dir, level))}
    table = _ResultsTable(out_dir / RESULTS_FILE, fields, [kept[c.case_id] for c in cases if c.case_id in kept])
    rows, graded, final = [], 0, None
    try:
        for index, case in enumerate(cases, start=1):
            if case.case_id in kept:
                row = kept[case.case_id]
                status = "kept"
            else:
                folder = out_dir / CASES_FOLDER / case.case_id
                row = {"case_id": case.case_id, "model_sha256": model_sha,
                       **{name: case.paths.get(name) or "" for name in INPUT_COLUMNS}}
                try:
                    if case.problem:
                        raise ReactKDError(case.problem)
                    row[FINGERPRINT_COLUMN] = input_fingerprint(case.paths)  # before reading: a later edit regrades
                    images = {name: read_image(p, name=name, labels=name == "mask") if p else None
                              for name, p in case.paths.items() if name != "seg"}
                    if case.paths.get("seg"):  # a DICOM SEG, placed on the CT by its frame geometry
                        images["mask"] = read_dicom_seg(case.paths["seg"], images["ct"], name="seg")
                    result = classifier.classify(images["ct"], images["mask"], images.get("pet_fdg"),
                                                 images.get("pet_act"))
                    write_outputs(result, folder, images["ct"], images["mask"], images.get("pet_fdg"),
                                  images.get("pet_act"), render=render)
                    row.update(status="ok", grade=result.grade, inputs="+".join(result.inputs),
                               warnings=" | ".join(result.warnings), outputs=f"{CASES_FOLDER}/{case.case_id}",
                               **set_columns(result, level),
                               **{f"p_{name}": f"{result.probabilities[name]:.6f}" for name in class_names})
                    graded += 1
                except ReactKDError as exc:
                    row.update(status="error", error=one_line(str(exc)))
                table.append(row)
                status = row["status"]
            rows.append(row)
            if progress is not None:
                progress({"event": "case", "index": index, "total": len(cases), "case_id": case.case_id,
                          "status": status, **({"error": row["error"]} if row.get("status") == "error"
                                               else {"grade": row.get("grade")})})
        final = rows
    finally:
        table.close(final)
    return graded, rows
