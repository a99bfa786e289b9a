"""Where a command may write, checked before any heavy work: never onto one of its inputs, never where the
write must fail (an existing file in place of a folder, a parent that is a file, a pseudo file system such as
/proc, a name longer than the file system allows, a folder without write permission).

Every command calls `check_output` first, so a bad `--out` costs nothing and overwrites nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from reactkd.errors import ReactKDError

#: Pseudo file systems: writing there is never a user's intent, and may do harm.
PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
#: Real, memory-backed file systems below a pseudo root (the inference process passes its volumes there).
REAL_UNDER_PSEUDO = (Path("/dev/shm"),)
NAME_MAX = 255  # bytes, per path component, on the usual file systems


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: str | os.PathLike, option: str = "--out", *, folder: bool, inputs: Iterable = (),
                 names: Iterable[str] = ()) -> Path:
    """Refuse an output location that would overwrite an input or cannot be written; returns it resolved.

    `folder`: the output is a folder (its files `names` are what the command writes there) or a file.
    `inputs`: the command's input paths (None entries are skipped); symlinks and relative paths resolve first.
    """
    out = Path(out)
    target = _resolved(out)
    for part in out.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ReactKDError(f"{option} {out}: a name in it is longer than {NAME_MAX} bytes")
    if any(target.is_relative_to(root) for root in PSEUDO_ROOTS) and \
            not any(target.is_relative_to(real) for real in REAL_UNDER_PSEUDO):
        raise ReactKDError(f"{option} {out}: refusing to write under {target.parts[0]}{target.parts[1]}")
    if folder and target.exists() and not target.is_dir():
        raise ReactKDError(f"{option} {out}: exists and is not a folder")
    if not folder and target.is_dir():
        raise ReactKDError(f"{option} {out}: is a folder; give a file name")
    ancestor = target if folder else target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReactKDError(f"{option} {out}: {ancestor} is a file, so nothing can be created below it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ReactKDError(f"{option} {out}: no permission to write in {ancestor}")
    written = [target / name for name in names] if folder else [target]
    for source in (Path(p) for p in inputs if p is not None):
        source_resolved = _resolved(source)
        if folder and source_resolved == target:
            raise ReactKDError(f"{option} {out}: is the input {source}; write the outputs to another folder")
        for path in written:
            if path == source_resolved or _same(path, source_resolved):
                raise ReactKDError(f"{option} {out}: would overwrite the input {source}")
    return target
