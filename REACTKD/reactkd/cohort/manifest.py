"""Manifests: the CSV files that list cases, with one reader per kind, one writer and one path rule.

- A cohort manifest (training, evaluation, `reactkd synth`): one row per scan (case_id, patient_id, label, ct,
  pet_fdg, pet_act, mask); paths relative to the manifest's folder and inside it. Validation collects every
  problem and reports them together, one line each.
- A grading manifest (`reactkd classify --manifest`): case_id, ct, mask or seg (a DICOM SEG; pet_fdg, pet_act optional); paths
  relative to the manifest's folder or absolute; a bad row is kept with its problem so the others still run.

An empty cell means the modality is absent.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from reactkd.atomic import write_text_atomic
from reactkd.errors import ImageReadError, ManifestError, ReactKDError
from reactkd.images.image_files import file_type_problem, image_files
from reactkd.vocabulary import CLASS_NAMES

COLUMNS = ("case_id", "patient_id", "label", "ct", "pet_fdg", "pet_act", "mask")
IMAGE_COLUMNS = ("ct", "pet_fdg", "pet_act", "mask")


@dataclass(frozen=True)
class CaseRecord:
    """One scan of the cohort with absolute paths (None = modality absent)."""

    case_id: str
    patient_id: str
    label: int
    ct: Path
    pet_fdg: Path | None
    pet_act: Path | None
    mask: Path
    world: str = ""            # synthetic cohorts: the world and version they were drawn from (else empty)
    cohort_version: str = ""
    differentiation: float | None = None  # synthetic cohorts: the latent continuous grade (0-3) behind the label

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("ct", "pet_fdg", "pet_act") if getattr(self, m) is not None)


def parse_label(value: str) -> int:
    """Accept a class index (0, 1, 2) or a class name (well, moderate, poor)."""
    text = value.strip().lower()
    if text in CLASS_NAMES:
        return CLASS_NAMES.index(text)
    if text.isdigit() and int(text) < len(CLASS_NAMES):
        return int(text)
    raise ValueError(f"unknown label {value!r} (expected 0-{len(CLASS_NAMES) - 1} or one of {', '.join(CLASS_NAMES)})")


class ManifestPathError(ValueError):
    """Why one manifest cell does not name a usable image (`missing`: the path is fine but nothing is there)."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def resolve_cell(root: Path, cell: str, contained: bool = True) -> Path | None:
    """The one path rule of every manifest: a cell is relative to the manifest's folder `root`; with
    `contained` (cohorts for training and evaluation) it must stay inside that folder, else (grading
    manifests) it may also be absolute or point elsewhere. Either way the image must follow the readers' file
    rule (`images.image_files`: regular files only, a detached header's data files beside or below it), so a
    contained cell's every byte lies in the cohort folder. Empty cell: None. Raises ManifestPathError."""
    cell = cell.strip()
    if not cell:
        return None
    relative = Path(cell)
    if contained and (relative.is_absolute() or os.path.splitdrive(cell)[0]):
        raise ManifestPathError(f"absolute path {cell!r} is not allowed (paths are relative to the manifest)")
    try:
        resolved = (root / relative).resolve()
        if contained and not resolved.is_relative_to(root.resolve()):
            raise ManifestPathError(f"path {cell!r} points outside the cohort folder")
        if not resolved.exists():
            raise ManifestPathError(f"not found: {cell}", missing=True)
    except (ValueError, OSError) as exc:  # NUL bytes, names too long, link loops
        if isinstance(exc, ManifestPathError):
            raise
        raise ManifestPathError(f"unusable path {cell!r} ({exc})") from None
    try:
        image_files(resolved, cell)
    except ImageReadError as exc:
        raise ManifestPathError(str(exc)) from None
    return resolved


def _resolve(root: Path, cell: str, where: str, problems: list[str]) -> Path | None:
    try:
        return resolve_cell(root, cell)
    except ManifestPathError as exc:
        problems.append(f"{where}: {'file ' if exc.missing else ''}{exc}")
        return None


def duplicated_columns(header: list[str]) -> list[str]:
    """Column names that appear more than once (a CSV reader would silently keep one of them)."""
    return sorted({name for name in header if name and header.count(name) > 1})


def read_manifest(path: str | os.PathLike) -> list[CaseRecord]:
    """Read and validate a cohort manifest; raise ManifestError listing every problem found.

    Example:
        >>> import pathlib, tempfile
        >>> from reactkd.cohort.synth import write_cohort
        >>> records = read_manifest(write_cohort(pathlib.Path(tempfile.mkdtemp()), 3, seed=0))
        >>> [(r.case_id, r.patient_id, r.label) for r in records]
        [('case_0000', 'P0000', 1), ('case_0001', 'P0001', 0), ('case_0002', 'P0002', 2)]
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    duplicated = duplicated_columns(header)
    if duplicated:  # csv.DictReader would silently keep the last one
        raise ManifestError(f"{path}: duplicated column(s) {', '.join(duplicated)}; each column must appear once")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})")
    root = path.parent
    records: list[CaseRecord] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{path.name} line {line_no}"
        case_id = row["case_id"]
        if not case_id:
            problems.append(f"{where}: empty case_id")
        elif case_id in seen:
            problems.append(f"{where}: duplicate case_id {case_id!r} (first on line {seen[case_id]})")
        else:
            seen[case_id] = line_no
        if not row["patient_id"]:
            problems.append(f"{where}: empty patient_id")
        try:
            label = parse_label(row["label"])
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            label = -1
        if not row["ct"]:
            kind = "PET without CT" if (row["pet_fdg"] or row["pet_act"]) else "no CT"
            problems.append(f"{where}: {kind}: the ct column is required")
        if not row["mask"]:
            problems.append(f"{where}: the mask column is required (liver/tumour label map)")
        paths = {c: _resolve(root, row[c], f"{where} ({c})", problems) for c in IMAGE_COLUMNS}
        if paths["ct"] and paths["mask"] and label >= 0 and case_id:
            records.append(CaseRecord(case_id, row["patient_id"], label, paths["ct"], paths["pet_fdg"],
                                      paths["pet_act"], paths["mask"], row.get("world", ""),
                                      row.get("cohort_version", ""),
                                      _differentiation(row.get("differentiation", ""), where, problems)))
    if not problems and not records:
        problems.append(f"{path}: manifest has no cases")
    if problems:
        raise ManifestError("invalid manifest:\n" + "\n".join(problems))
    return records


def _differentiation(text: str, where: str, problems: list[str]) -> float | None:
    """The optional latent differentiation cell: empty (real cohorts) or a finite number in [-1, 4]."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -1.0 <= value <= 4.0:
        problems.append(f"{where}: differentiation must be a number from -1 to 4 (the latent grade), got {text!r}")
        return None
    return value


def write_manifest(path: str | os.PathLike, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> Path:
    """Write manifest rows atomically (missing cells empty). Cohort manifests keep paths relative to the
    manifest's folder; a grading manifest may hold absolute paths."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") or "" for c in columns})
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


#: Image files a case folder may hold, by manifest column (the layout `reactkd synth` writes).
FOLDER_IMAGES = {"ct": "ct", "mask": "mask", "pet_fdg": "pet_fdg", "pet_act": "pet_act"}
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def manifest_from_folder(folder: str | Path, manifest: str | Path) -> Path:
    """Write a grading manifest for every sub-folder of `folder` holding ct.* and mask.* (pet_fdg.*, pet_act.*
    optional; NIfTI, NRRD or MetaImage); the sub-folder's name is the case_id. Raises when none qualifies."""
    folder, manifest = Path(folder), Path(manifest)
    if not folder.is_dir():
        raise ReactKDError(f"{folder}: not a folder")
    rows = []
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = {column: next((case / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES
                               if (case / f"{stem}{suffix}").is_file()), None) for column, stem in FOLDER_IMAGES.items()}
        if found["ct"] and found["mask"]:
            rows.append({"case_id": case.name, **{c: str(found[c].resolve()) if found[c] else "" for c in FOLDER_IMAGES}})
    if not rows:
        raise ReactKDError(f"{folder}: no case folders with a ct and a mask image (e.g. case_01/ct.nii.gz, "
                           "case_01/mask.nii.gz)")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    return write_manifest(manifest, rows, ("case_id", *FOLDER_IMAGES))


#: Columns of a grading manifest (`reactkd classify --manifest`); label or patient_id, if present, are ignored.
GRADING_REQUIRED_COLUMNS = ("case_id", "ct", "mask")
GRADING_OPTIONAL_COLUMNS = ("pet_fdg", "pet_act")
#: A case's mask: a label map (mask) or a DICOM SEG (seg), one of the two per row.
GRADING_MASK_COLUMNS = ("mask", "seg")
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
    if (kind := file_type_problem(path)) not in (None, "not found"):  # reading a FIFO would hang
        raise ManifestError(f"{path}: the manifest is {kind}, not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in GRADING_REQUIRED_COLUMNS
               if name not in header and not (name == "mask" and "seg" in header)]
    duplicated = duplicated_columns(header)
    if missing or duplicated:
        raise ManifestError(f"{path}: " + "; ".join(
            ([f"missing column(s) {', '.join(missing)} (needs {', '.join(GRADING_REQUIRED_COLUMNS)})"] if missing else [])
            + ([f"duplicated column(s) {', '.join(duplicated)}"] if duplicated else [])))
    columns = [name for name in (*GRADING_REQUIRED_COLUMNS, "seg", *GRADING_OPTIONAL_COLUMNS) if name in header]
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
                if name in GRADING_REQUIRED_COLUMNS and name != "mask":
                    problems.append(f"no {name}")
                case.paths[name] = None
                continue
            try:
                case.paths[name] = resolve_cell(path.parent, cell, contained=False)
            except ManifestPathError as exc:
                problems.append(f"{name} {exc}")
                case.paths[name] = (path.parent / cell).resolve() if exc.missing else None
        masks = [name for name in GRADING_MASK_COLUMNS if row.get(name)]
        if len(masks) != 1:
            problems.append("no mask (a label map in mask, or a DICOM SEG in seg)" if not masks
                            else "both mask and seg: give one of the two")
        case.problem = "; ".join(problems) or None
        cases.append(case)
    if not cases:
        raise ManifestError(f"{path}: manifest has no cases")
    return cases
