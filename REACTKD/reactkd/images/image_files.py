"""The files one image read opens, and the one rule they follow wherever the path came from (--ct, a manifest
cell, Slicer):

- regular files only: a FIFO, device or socket is refused before anything opens it (reading one hangs or
  streams without end);
- a detached header's data files (NRRD `data file:` as a name, a LIST or a format string; MetaImage
  `ElementDataFile` the same; the .img of a NIfTI/Analyze .hdr) and a DICOM folder's files lie beside or below
  the header's own folder once symlinks are resolved: a header cannot pull in `../outside.raw` or
  `/etc/passwd`, so a cohort folder that passes the manifest's containment rule holds every byte it is
  graded on.

Pure Python (no SimpleITK): the manifest reader in Slicer's process uses it too.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from reactkd.errors import ImageReadError

#: A header is read this far: a LIST of tens of thousands of slice files fits, a header is never larger.
MAX_HEADER_BYTES = 1 << 20
#: More data files than this in one header (a LIST or a format string's range) is refused, not enumerated.
MAX_DATA_FILES = 100_000

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def file_type_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is no regular file ("not found", "a FIFO", "a folder", ...); None for a regular file. Only
    stats the path (following symlinks), never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except (OSError, ValueError) as exc:  # a link loop, a name too long, a NUL byte
        return f"unusable ({exc})"
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "not a regular file")


def image_files(path: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Every file reading the image at `path` opens: the file and its detached data files, or a DICOM folder's
    files. Raises ImageReadError (one line, naming `name`) where one breaks the rule above."""
    path = Path(path)
    name = name or str(path)
    if path.is_dir():
        return _folder_files(path, name)
    problem = file_type_problem(path)
    if problem == "not found":
        raise ImageReadError(f"{name}: file not found")
    if problem:
        raise ImageReadError(f"{name}: is {problem}, not a regular file")
    # ITK resolves a data file against the folder of the header's path as given (a symlinked header included).
    return [path, *(_data_file(path.parent, written, name) for written in data_file_names(path, name))]


def _folder_files(folder: Path, name: str) -> list[Path]:
    """The files GDCM opens when it scans a DICOM folder (every entry that is not a folder)."""
    base = folder.resolve()
    files = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise ImageReadError(f"{name}: folder cannot be listed ({exc})") from None
    for entry in entries:
        problem = file_type_problem(entry.path)
        if problem == "a folder":
            continue
        if problem or not Path(entry.path).resolve().is_relative_to(base):
            why = f"is {problem}, not a regular file" if problem else "points outside the folder"
            raise ImageReadError(f"{name}: {entry.name!r} {why} (a DICOM folder may hold only regular files of its own)")
        files.append(Path(entry.path))
    return files


def _data_file(folder: Path, written: str, name: str) -> Path:
    target = Path(written) if os.path.isabs(written) else folder / written
    try:
        inside = target.resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ImageReadError(f"{name}: data file {written!r} is unusable ({exc})") from None
    if not inside:
        raise ImageReadError(f"{name}: data file {written!r} lies outside the header's folder (a detached "
                             "header's data files must lie beside or below it)")
    problem = file_type_problem(target)
    if problem:
        raise ImageReadError(f"{name}: data file {written!r} " + ("not found" if problem == "not found"
                                                                   else f"is {problem}, not a regular file"))
    return target


def data_file_names(header: Path, name: str | None = None) -> list[str]:
    """The data files a header names, as written (relative to its folder or absolute); [] for a file that holds
    its own data. `header` must be a regular file."""
    name = name or str(header)
    lower = header.name.lower()
    if lower.endswith(".hdr"):  # NIfTI/Analyze pair: ITK reads the .img (or .img.gz) of the same name
        stem = header.name[:-4]
        return [n for n in (stem + ".img", stem + ".img.gz") if os.path.lexists(header.parent / n)] or [stem + ".img"]
    if lower.endswith((".img", ".img.gz")):
        stem = header.name[: -len(".img.gz" if lower.endswith(".gz") else ".img")]
        return [stem + ".hdr"] if os.path.lexists(header.parent / (stem + ".hdr")) else []
    with open(header, "rb") as handle:  # by content, as ITK chooses its reader: a NRRD named .nii is read as NRRD
        head = handle.read(MAX_HEADER_BYTES)
    if head.startswith(b"NRRD"):
        return _listed_files(head.decode("latin-1").splitlines()[1:], _NRRD_FIELD, name, blank_ends_header=True)
    if _META_FIELD_BYTES.search(head, 0, 1 << 16):  # a MetaImage header is short; other files are not decoded
        return _listed_files(head.decode("latin-1").splitlines(), _META_FIELD, name, blank_ends_header=False)
    return []


_NRRD_FIELD = re.compile(r"data ?file\s*:(.*)$", re.IGNORECASE)
_META_FIELD = re.compile(r"\s*elementdatafile\s*=(.*)$", re.IGNORECASE)
_META_FIELD_BYTES = re.compile(rb"^[ \t]*elementdatafile[ \t]*=", re.IGNORECASE | re.MULTILINE)


def _listed_files(lines: list[str], field: re.Pattern, name: str, blank_ends_header: bool) -> list[str]:
    """NRRD and MetaImage name data files the same three ways: one name, LIST (names on the lines that follow)
    or `<format> <first> <last> <step> [<dims>]` (a printf pattern over a range); MetaImage's LOCAL is inline
    (MetaImage headers may hold blank lines, NRRD ones end at the first)."""
    for index, line in enumerate(lines):
        if blank_ends_header and not line.strip():  # a blank line ends a NRRD header (inline data follows)
            return []
        match = field.match(line)
        if not match:
            continue
        value = match.group(1).strip()
        tokens = value.split()
        if not tokens or (not blank_ends_header and value.upper() == "LOCAL"):
            return []
        if tokens[0].upper() == "LIST":
            listed = []
            for entry in lines[index + 1:]:
                if not entry.strip():
                    break
                listed.append(entry.strip())
                if len(listed) > MAX_DATA_FILES:
                    raise ImageReadError(f"{name}: header lists more than {MAX_DATA_FILES} data files")
            return listed
        if len(tokens) in (4, 5) and "%" in tokens[0] and all(re.fullmatch(r"-?\d+", t) for t in tokens[1:4]):
            return _formatted(tokens[0], *(int(t) for t in tokens[1:4]), name=name)
        return [value]
    return []


def _formatted(pattern: str, first: int, last: int, step: int, name: str) -> list[str]:
    # A width or precision of 5 digits or more (`%0999999999d`) would build names of gigabytes.
    if step == 0 or (last - first) // step + 1 > MAX_DATA_FILES or re.search(r"%[^a-zA-Z%]*\d{5}", pattern):
        raise ImageReadError(f"{name}: data file pattern {pattern!r} {first} {last} {step} is unusable")
    try:
        return [pattern % number for number in range(first, last + (1 if step > 0 else -1), step)]
    except (TypeError, ValueError, OverflowError):
        raise ImageReadError(f"{name}: data file pattern {pattern!r} is not a number pattern") from None
