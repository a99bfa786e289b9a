"""Child processes that run ``reactkd`` with Slicer's Python: start them in their own process group, read
their JSON-lines progress, stop them with their whole tree. Qt-free and Slicer-free (tested with plain Python).

Used by the REACTKDTraining runner (train, evaluate, batch classify) and by the REACTKD module's persistent
inference process (`reactkd.inference.client`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ProgressCallback = Callable[[dict[str, Any]], None]
#: How long a cancelled child (and its children) get to exit after SIGTERM before SIGKILL.
CANCEL_GRACE_S = 5.0
_log = logging.getLogger(__name__)


def slicer_python_executable(executable: str | None = None) -> str:
    """The Python that runs ``reactkd`` with Slicer's environment: ``PythonSlicer`` on PATH or beside the
    running interpreter, else the running interpreter itself (plain Python outside Slicer)."""
    executable = executable or sys.executable
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    beside = Path(executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which("PythonSlicer") or executable


def reactkd_search_path() -> str | None:
    """Folder holding the ``reactkd`` package, for the child's PYTHONPATH: in Slicer it sits in the
    extension's scripted-module folder, which PythonSlicer does not put on sys.path by itself."""
    spec = importlib.util.find_spec("reactkd")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


class RunHandle:
    """A running (or finished) ``reactkd`` child process.

    Progress events are delivered to the callback in the order the child printed them: from a reader
    thread (`callbacks_in_thread=True`), or queued until :meth:`dispatch` / :meth:`wait` is called on the
    caller's thread (what a Qt application needs: widgets may only be touched from the main thread).
    """

    def __init__(self, process: subprocess.Popen, progress: ProgressCallback | None = None,
                 callbacks_in_thread: bool = True,
                 on_exit: Callable[[RunHandle], None] | None = None) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.model_dir: Path | None = None
        self.cancelled = False
        self.registered = None  # CatalogEntry set by TrainingRunner.train after a successful run
        self._progress = progress
        self._threaded = callbacks_in_thread
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._error_line: str | None = None
        self._error_event: str | None = None
        self._on_exit = on_exit
        self._finished = threading.Event()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._watch, daemon=True).start()

    # ------------------------------------------------------------------------------------- public API
    @property
    def done(self) -> bool:
        """True once the child has exited, its output is read and post-run work (registration) is over."""
        return self._finished.is_set()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def error_message(self) -> str | None:
        """Why the run failed: the last ``error:`` line of stderr (without the prefix), else the child's
        error event, else the last stderr line of a failed run; None for a successful run."""
        if self._error_line:
            return self._error_line
        if self._error_event:
            return self._error_event
        code = self.returncode
        if code not in (None, 0) and not self.cancelled:
            tail = [line for line in self.stderr_lines if line.strip()]
            return tail[-1].strip() if tail else f"reactkd exited with code {code}"
        return None

    def dispatch(self) -> int:
        """Deliver queued events to the callback on the calling thread; returns how many."""
        count = 0
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return count
            self._call(event)
            count += 1

    def wait(self, timeout: float | None = None, poll: Callable[[], None] | None = None,
             interval: float = 0.05) -> int:
        """Wait for the run to finish and return its exit code, delivering queued events meanwhile and
        calling `poll` (e.g. ``slicer.app.processEvents``) every `interval` seconds.

        Raises subprocess.TimeoutExpired after `timeout` seconds (the child keeps running). Ctrl-C
        cancels the child: it runs in its own session, so the terminal's SIGINT does not reach it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._finished.wait(interval):
                self.dispatch()
                if poll is not None:
                    poll()
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(self.process.args, timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise
        self.dispatch()
        return self.process.returncode

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the child and every process in its group (see `stop_process_group`). Returns once the
        child has exited; a run that has already finished is left as it is."""
        if self.process.poll() is not None and (os.name == "nt" or not group_alive(self.process.pid)):
            return  # nothing left to stop; signalling now could hit a reused process id
        self.cancelled = True
        stop_process_group(self.process, grace_s)

    # ------------------------------------------------------------------------------------- internals
    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                event = {"event": "log", "message": line}
            self.emit(event)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.rstrip("\r\n")
            self.stderr_lines.append(line)
            if line.startswith("error:"):
                self._error_line = line[len("error:"):].strip()

    def _watch(self) -> None:
        self.process.wait()
        for reader in self._readers:
            # A grandchild that outlives the child may hold the pipes open; do not wait for it forever.
            reader.join(timeout=5.0)
        try:
            if self._on_exit is not None:
                self._on_exit(self)
        except Exception as exc:  # reported as an event: the caller may not be waiting on this thread
            _log.exception("post-run step failed")
            self.emit({"event": "error", "message": str(exc)})
        finally:
            self._finished.set()

    def emit(self, event: dict[str, Any]) -> None:
        """Record an event and deliver it (used by the readers and by post-run steps)."""
        self.events.append(event)
        if event.get("event") == "done" and event.get("model_dir"):
            self.model_dir = Path(event["model_dir"])
        elif event.get("event") == "error" and event.get("message"):
            self._error_event = str(event["message"])
        if self._threaded:
            self._call(event)
        else:
            self._queue.put(event)

    def _call(self, event: dict[str, Any]) -> None:
        if self._progress is None:
            return
        try:
            self._progress(event)
        except Exception:  # a faulty callback must not stop reading (the child would block on a full pipe)
            _log.exception("progress callback failed on %r", event)


def group_alive(group: int) -> bool:
    """Whether any live (non-zombie) process is left in process group `group`."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # Fields after the parenthesised command: state ppid pgrp ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                return True
    return False


def new_group_options() -> dict[str, Any]:
    """Popen options that put the child in its own process group (POSIX session / Windows process group), so
    a cancel reaches its children and the terminal's Ctrl-C does not reach it."""
    if os.name == "nt":  # pragma: no cover
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a ``reactkd`` child: `env` (default: this process's) with the folder of the ``reactkd``
    package first on PYTHONPATH and unbuffered UTF-8 output, so progress streams line by line."""
    env = dict(os.environ if env is None else env)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    search = reactkd_search_path()
    if search:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([search, *[p for p in parts if p != search]])
    return env


#: Children whose stop is under way (often in a daemon thread): killed at interpreter exit if still running,
#: since daemon threads die with the interpreter and would leave the child behind (Slicer closing mid-request).
_STOPPING: set[subprocess.Popen] = set()
_STOPPING_LOCK = threading.Lock()


@atexit.register
def _kill_unfinished_stops() -> None:
    with _STOPPING_LOCK:
        unfinished = [process for process in _STOPPING if process.poll() is None]
    for process in unfinished:
        with contextlib.suppress(OSError):
            if os.name == "nt":  # pragma: no cover
                process.kill()
            else:
                os.killpg(process.pid, signal.SIGKILL)


def stop_process_group(process: subprocess.Popen, grace_s: float = CANCEL_GRACE_S) -> None:
    """Stop `process` (started with `new_group_options`) and every process in its group: SIGTERM, then
    SIGKILL after `grace_s` (Windows: CTRL_BREAK, then ``taskkill /T /F`` without a console window; at once
    when CTRL_BREAK cannot be sent, as for a console-less child). Returns once it has exited; a stop still
    under way when the interpreter exits is finished by a kill then."""
    with _STOPPING_LOCK:
        _STOPPING.add(process)
    try:
        if os.name == "nt":
            _stop_windows_tree(process, grace_s)
            return
        group = process.pid  # start_new_session made the child its group leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (process.poll() is None or group_alive(group)):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)  # whatever ignored SIGTERM, or outlived its parent
        process.wait()
    finally:
        with _STOPPING_LOCK:
            _STOPPING.discard(process)


def _stop_windows_tree(process: subprocess.Popen, grace_s: float) -> None:
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    except (OSError, ValueError):
        pass  # no console to deliver it to: waiting would only delay the kill
    # taskkill /T walks the tree from the child's PID; without CREATE_NO_WINDOW a console flashes up.
    with contextlib.suppress(OSError):
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000))
    if process.poll() is None:  # taskkill absent or refused: the child itself at least
        with contextlib.suppress(OSError):
            process.kill()
    process.wait()


def launch_child(argv: list[str], env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL) -> subprocess.Popen:
    """The one launcher of ``reactkd`` children: `argv` in its own process group (`new_group_options`) with the
    ``reactkd`` environment (`child_env`), stdout and stderr as line-buffered UTF-8 text pipes.

    Args:
        argv: the command line, e.g. ``[PythonSlicer, "-m", "reactkd", "serve"]``.
        env: the base environment (default: this process's).
        stdin: ``subprocess.DEVNULL`` (a run) or ``subprocess.PIPE`` (a server that reads requests).
    """
    return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", bufsize=1, env=child_env(env), **new_group_options())


def exit_reason(code: int | None) -> str:
    """How a child ended, in words: ``exit code N`` or ``killed by signal N`` (POSIX negative codes)."""
    return f"exit code {code}" if code is None or code >= 0 else f"killed by signal {-code}"


def start_reactkd(argv: list[str], progress: ProgressCallback | None = None, callbacks_in_thread: bool = True,
                  on_exit: Callable[[RunHandle], None] | None = None, env: dict[str, str] | None = None) -> RunHandle:
    """Start `argv` (e.g. ``[PythonSlicer, "-m", "reactkd", "classify", ...]``) with `launch_child`; its JSON
    lines arrive as events on the returned handle.

    Args:
        argv: the command line.
        progress: called with each event (see RunHandle for which thread).
        callbacks_in_thread: deliver events from the reader thread instead of `RunHandle.dispatch`.
        on_exit: post-run step, called with the handle once the child has exited.
        env: the base environment (default: this process's).
    """
    return RunHandle(launch_child(argv, env), progress, callbacks_in_thread, on_exit)
