"""Cohort manifest: a CSV with one row per scan (case_id, patient_id, label, ct, pet_fdg, pet_act, mask).

Paths are relative to the manifest's folder; an empty cell means the modality is absent. Validation
collects every problem and reports them together, one line each.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from reactkd.atomic import write_text_atomic
from reactkd.errors import ManifestError, ReactKDError
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


def _resolve(root: Path, cell: str, where: str, problems: list[str]) -> Path | None:
    cell = cell.strip()
    if not cell:
        return None
    relative = Path(cell)
    if relative.is_absolute() or os.path.splitdrive(cell)[0]:
        problems.append(f"{where}: absolute path {cell!r} is not allowed (paths are relative to the manifest)")
        return None
    try:
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where}: path {cell!r} points outside the cohort folder")
            return None
        if not resolved.exists():
            problems.append(f"{where}: file not found: {cell}")
            return None
    except (ValueError, OSError) as exc:  # NUL bytes, names too long, link loops
        problems.append(f"{where}: unusable path {cell!r} ({exc})")
        return None
    return resolved


def duplicated_columns(header: list[str]) -> list[str]:
    """Column names that appear more than once (a CSV reader would silently keep one of them)."""
    return sorted({name for name in header if name and header.count(name) > 1})


def read_manifest(path: str | os.PathLike) -> list[CaseRecord]:
    """Read and validate a manifest; raise ManifestError listing every problem found."""
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
                                      paths["pet_act"], paths["mask"]))
    if not problems and not records:
        problems.append(f"{path}: manifest has no cases")
    if problems:
        raise ManifestError("invalid manifest:\n" + "\n".join(problems))
    return records


def write_manifest(path: str | os.PathLike, rows: list[dict[str, str]]) -> Path:
    """Write manifest rows (values already relative to the manifest's folder) atomically."""
    import io


    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") or "" for c in COLUMNS})
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
            rows.append([case.name, *[str(found[c].resolve()) if found[c] else "" for c in FOLDER_IMAGES]])
    if not rows:
        raise ReactKDError(f"{folder}: no case folders with a ct and a mask image (e.g. case_01/ct.nii.gz, "
                           "case_01/mask.nii.gz)")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", *FOLDER_IMAGES])
    writer.writerows(rows)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(manifest, buffer.getvalue())
    return manifest
