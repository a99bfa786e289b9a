"""Run ``reactkd`` commands (train, evaluate) in a child process with structured progress and cancel.

Qt-free and Slicer-free, so it is tested with plain Python; REACTKDTraining.py wraps it for Slicer.

The child is started as ``python -m reactkd <args> --progress json``; it prints one JSON object per
line on stdout (``{"event": "start"|"step"|"epoch"|"done"|"error", ...}``) and ``error: ...`` on
stderr for bad input. It runs in its own process group (POSIX session / Windows process group) so that
cancelling stops it together with its own children (data loader workers).
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reactkd.errors import ConfigError, ReactKDError

ProgressCallback = Callable[[dict[str, Any]], None]
STAGES = ("teacher-sf", "teacher-dose", "student")
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
        """Stop the child and every process in its group: SIGTERM, then SIGKILL after `grace_s`
        (Windows: CTRL_BREAK, then ``taskkill /T /F``). Returns once the child has exited; a run that has
        already finished is left as it is."""
        if self.process.poll() is not None and (os.name == "nt" or not _group_alive(self.process.pid)):
            return  # nothing left to stop; signalling now could hit a reused process id
        self.cancelled = True
        if os.name == "nt":
            self._cancel_windows(grace_s)
        else:
            self._cancel_posix(grace_s)

    # ------------------------------------------------------------------------------------- internals
    def _cancel_posix(self, grace_s: float) -> None:
        group = self.process.pid  # start_new_session=True made the child its group leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(group)):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)  # whatever ignored SIGTERM, or outlived its parent
        self.process.wait()

    def _cancel_windows(self, grace_s: float) -> None:  # pragma: no cover - exercised on Windows only
        with contextlib.suppress(OSError, ValueError):
            self.process.send_signal(signal.CTRL_BREAK_EVENT)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        # taskkill /T walks the tree from the child's PID; best effort once the child is gone.
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.process.pid)], capture_output=True,
                       check=False)
        self.process.wait()

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


def _group_alive(group: int) -> bool:
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


class TrainingRunner:
    """Launch ``reactkd train`` / ``reactkd evaluate`` as child processes.

    Args:
        python: interpreter for the child (default: the running one).
        catalog: ModelCatalog that :meth:`train` registers trained models in (default: the user's).
        command: replaces ``[python, "-m", "reactkd"]`` (tests use a fake child).
        env: environment for the child (default: this process's); PYTHONPATH gets the folder of the
            ``reactkd`` package prepended and output is unbuffered so progress streams line by line.
        callbacks_in_thread: see :class:`RunHandle`.
    """

    def __init__(self, python: str | None = None, catalog=None, command: Sequence[str] | None = None,
                 env: dict[str, str] | None = None, callbacks_in_thread: bool = True) -> None:
        self.python = python
        self.catalog = catalog
        self.command = list(command) if command is not None else None
        self.env = env
        self.callbacks_in_thread = callbacks_in_thread

    def run(self, args: Sequence[str], progress: ProgressCallback | None = None, wait: bool = True,
            python: str | None = None, *, command: Sequence[str] | None = None,
            on_exit: Callable[[RunHandle], None] | None = None, json_progress: bool = True) -> RunHandle:
        """Start ``python -m reactkd *args --progress json``; with `wait`, return once it has finished.

        `json_progress=False` leaves out ``--progress json`` for commands without it (synth, classify):
        their stdout lines then arrive as ``{"event": "log", "message": line}``."""
        prefix = list(command or self.command or [python or self.python or sys.executable, "-m", "reactkd"])
        argv = [*prefix, *map(str, args), *(["--progress", "json"] if json_progress else [])]
        options: dict[str, Any] = {}
        if os.name == "nt":  # pragma: no cover
            options["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                        | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            options["start_new_session"] = True
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                   bufsize=1, env=self._child_env(), **options)
        handle = RunHandle(process, progress, self.callbacks_in_thread, on_exit)
        if wait:
            handle.wait()
        return handle

    def train(self, stage: str, manifest: str | os.PathLike, out: str | os.PathLike,
              config: str | os.PathLike | None = None, extra_args: Sequence[str] = (),
              progress: ProgressCallback | None = None, wait: bool = True, register: bool = True,
              catalog=None) -> RunHandle:
        """``reactkd train --stage S --manifest M --out O [--config C] *extra_args``; after a successful
        run the model package (the ``done`` event's ``model_dir``, else `out`) is registered in the
        catalogue and a ``{"event": "registered", "name", "path"}`` event follows."""
        if stage not in STAGES:
            raise ConfigError(f"unknown training stage {stage!r}; expected one of {', '.join(STAGES)}")
        args = ["train", "--stage", stage, "--manifest", str(manifest), "--out", str(out)]
        if config is not None:
            args += ["--config", str(config)]
        args += [str(a) for a in extra_args]

        def register_model(handle: RunHandle) -> None:
            if not register or handle.cancelled or handle.process.returncode != 0:
                return
            target = catalog or self.catalog
            if target is None:
                from reactkd.catalog import ModelCatalog

                target = ModelCatalog()
            try:
                entry = target.register(handle.model_dir or Path(out))
            except ReactKDError as exc:
                handle.emit({"event": "error", "message": f"model not registered: {exc}"})
                return
            handle.registered = entry
            handle.emit({"event": "registered", "name": entry.name, "path": str(entry.path)})

        return self.run(args, progress, wait, on_exit=register_model)

    def evaluate(self, manifest: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                 doses: Sequence[float] | str | None = None, modalities: Sequence[str] | str | None = None,
                 extra_args: Sequence[str] = (), progress: ProgressCallback | None = None,
                 wait: bool = True) -> RunHandle:
        """``reactkd evaluate --manifest M --model D --out O [--doses 1,0.5] [--modalities ct,all]``."""
        args = ["evaluate", "--manifest", str(manifest), "--model", str(model), "--out", str(out)]
        if doses is not None:
            args += ["--doses", doses if isinstance(doses, str) else ",".join(f"{d:g}" for d in doses)]
        if modalities is not None:
            args += ["--modalities", modalities if isinstance(modalities, str) else ",".join(modalities)]
        args += [str(a) for a in extra_args]
        return self.run(args, progress, wait)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        search = reactkd_search_path()
        if search:
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join([search, *[p for p in parts if p != search]])
        return env
