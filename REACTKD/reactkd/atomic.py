"""Atomic file writes: write to a temporary name in the same folder, then rename, so a reader (or a crash)
never sees a half-written file. Output folders are owned by one run at a time (`folder_lock`), and staging
folders left by a killed run are removed by the next (`remove_stale_staging`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary name keeps the suffix (e.g. ``.nii.gz``) so writers that pick a format by extension work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions a plain open() would (0666 minus umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


LOCK_FILE = ".reactkd.lock"  # Windows only: elsewhere the folder itself is locked, nothing is added to it


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so two runs never write into it at once. With `wait=False` a folder
    another run holds raises ReactKDError instead of waiting. The lock goes away with the process, however it
    ends."""
    from reactkd.errors import ReactKDError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":  # pragma: no cover - Windows: a byte-range lock on a lock file
        import msvcrt

        handle = open(folder / LOCK_FILE, "a+b")
        fd = handle.fileno()

        def lock() -> None:
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
    else:  # flock on the folder itself: nothing is added to it
        import fcntl

        handle, fd = None, os.open(folder, os.O_RDONLY)

        def lock() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    try:
        try:
            lock()
        except OSError:
            raise ReactKDError(f"{folder}: another reactkd run is writing into this folder; wait for it or "
                               "choose another --out") from None
        yield
    finally:  # closing releases the lock
        if handle is not None:
            handle.close()
        else:
            os.close(fd)


def staging_prefix() -> str:
    """Name prefix of this process's staging folders: `.reactkd-out-<pid>-`."""
    return f".reactkd-out-{os.getpid()}-"


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Delete `.reactkd-out-<pid>-*` staging folders in `folder` whose process is gone (a killed run); folders
    of the older, pid-less naming too (no run of this version writes them)."""
    return remove_orphan_folders(folder, ".reactkd-out-", pidless=True)


#: Largest value a process id (a C pid_t) can hold; a longer "pid" in a name is no process of this system.
MAX_PID = 2**31 - 1


def remove_orphan_folders(root: str | os.PathLike, prefix: str, pidless: bool = False) -> list[Path]:
    """Delete folders `<prefix><pid>-*` in `root` whose process no longer runs (and, with `pidless`, folders
    `<prefix>*` without a pid). A running process's folders, this one's included, are kept.

    Names in a shared folder (/dev/shm, a shared --out) are anyone's to choose, so none is trusted: only real
    folders (never symlinks) owned by this user are considered, a pid outside 1..MAX_PID keeps the folder,
    and nothing here raises; what cannot be examined or removed is left alone.
    """
    removed = []
    try:
        with os.scandir(root) as listing:
            candidates = [entry for entry in listing if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in candidates:
        head = entry.name[len(prefix):].split("-", 1)
        digits = head[0] if len(head) == 2 and head[0].isascii() and head[0].isdigit() else None
        if digits is None and not pidless:
            continue
        if digits is not None and not (len(digits) <= 10 and 1 <= int(digits) <= MAX_PID):
            continue  # not a pid this system can have: someone else's name, never ours to remove
        if not own_real_folder(entry) or (digits is not None and pid_alive(int(digits))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


def own_real_folder(path: str | os.PathLike) -> bool:
    """A folder itself (not a symlink to one) owned by the user running this process."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISDIR(info.st_mode) and owner_ok


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (on Windows, where a probe would signal it, always assumed to). A value that
    is no process id at all (0, negative, too large for the system) counts as running: nothing is removed."""
    if pid == os.getpid() or os.name == "nt":  # pragma: no cover - os.kill(pid, 0) would send CTRL_C there
        return True
    if not isinstance(pid, int) or not 1 <= pid <= MAX_PID:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # exists, owned by someone else (or unprobeable)
        return True
    return True
