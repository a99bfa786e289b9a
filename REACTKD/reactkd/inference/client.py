"""The REACTKD module's persistent inference process, seen from Slicer (Qt-free, tested with a real child).

`InferenceProcess` starts ``PythonSlicer -m reactkd serve`` (`reactkd.inference.server`) on first use and
keeps it, so the model loads once and stays warm. `submit` returns an `InferenceRequest` at once: a
background thread writes the inputs to a private folder, sends the request, follows the progress events and
reads the outputs back into a ClassificationResult; the GUI only looks at ``request.done``, ``stage`` and
``fraction`` from a timer, so it never blocks. `cancel` kills the child with its whole process group; the
next request starts a new one. If the child dies (a CUDA fault, out of memory), the pending request ends with
a clear error and Slicer keeps running.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from reactkd.atomic import remove_orphan_folders
from reactkd.errors import ReactKDError
from reactkd.processes import exit_reason, launch_child, slicer_python_executable, stop_process_group

START_TIMEOUT_S = 120.0
#: Private folders of inference sessions: reactkd-inference-<pid of the Slicer process>-<random>.
SESSION_PREFIX = "reactkd-inference-"
_log = logging.getLogger(__name__)


class InferenceRequest:
    """One classification in flight. Attributes are read by the GUI thread; only the worker writes them."""

    def __init__(self, request_id: int) -> None:
        self.id = request_id
        self.stage = "queued"
        self.fraction = 0.0
        self.cancelled = False
        self.model_was_loaded: bool | None = None
        self.reply: dict[str, Any] | None = None  # the child's result or error event
        self._replied = threading.Event()
        self._done = threading.Event()
        self._result = None
        self._error: str | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to `timeout` seconds for the request to end (for scripts; the GUI polls `done`)."""
        return self._done.wait(timeout)

    def result(self):
        """The ClassificationResult; None when cancelled; raises ReactKDError with the child's message."""
        if not self.done:
            raise ReactKDError("the classification has not finished yet")
        if self.cancelled:
            return None
        if self._error is not None:
            raise ReactKDError(self._error)
        return self._result

    def _answer(self, event: dict[str, Any]) -> None:
        self.reply = event
        self._replied.set()

    def _finish(self, result=None, error: str | None = None) -> None:
        if not self.done:
            self._result, self._error = result, error
            self.stage, self.fraction = ("done", 1.0) if error is None else ("failed", self.fraction)
            self._done.set()
            self._replied.set()


class InferenceProcess:
    """A warm ``reactkd serve`` child, started on the first request.

    Args:
        command: the child's command line (default: Slicer's Python running ``-m reactkd serve``).
        env: its environment (default: this process's, with the ``reactkd`` package on PYTHONPATH).
    """

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.command = list(command) if command else [slicer_python_executable(), "-m", "reactkd", "serve"]
        self.env = env
        self.start_timeout_s = start_timeout_s
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=200)
        #: (model folder, requested device) -> device the warm child runs it on.
        self.loaded: dict[tuple[str, str], str] = {}
        self._process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._pending: InferenceRequest | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._session: Path | None = None

    # ------------------------------------------------------------------------------------- public API
    @property
    def pid(self) -> int | None:
        """Process id of the running child, None when there is none."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done

    def submit(self, inputs: dict[str, Any], model_dir: str | os.PathLike | None = None,
               device: str = "auto") -> InferenceRequest:
        """Start classifying `inputs` ({"ct", "mask", "pet_fdg", "pet_act"}: SimpleITK images, PETs may be
        None); returns at once. One request at a time."""
        with self._lock:
            if self.busy:
                raise ReactKDError("a classification is already running; wait for it or cancel it")
            request = InferenceRequest(next(self._ids))
            self._pending = request
        threading.Thread(target=self._work, args=(request, inputs, model_dir, device), daemon=True,
                         name=f"reactkd-request-{request.id}").start()
        return request

    def classify(self, inputs: dict[str, Any], model_dir=None, device: str = "auto", timeout: float | None = None):
        """Blocking `submit` for scripts: the ClassificationResult (or ReactKDError)."""
        request = self.submit(inputs, model_dir, device)
        if not request.wait(timeout):
            self.cancel()
            raise ReactKDError(f"classification did not finish within {timeout} s; cancelled")
        return request.result()

    def cancel(self) -> None:
        """Stop the running classification at once: the child and its process group are killed (in the
        background, so the caller never waits); the next request starts a fresh child."""
        request = self._pending
        with self._lock:
            process, self._process = self._process, None
            self._ready.clear()
            self.loaded.clear()
        if request is not None and not request.done:
            request.cancelled = True
            request._finish(error="cancelled")
        if process is not None:
            threading.Thread(target=stop_process_group, args=(process, 1.0), daemon=True).start()

    def shutdown(self, timeout: float = 3.0) -> None:
        """Ask the child to exit (kill it if it does not within `timeout`) and remove the session folder."""
        if self.busy:
            self.cancel()
        with self._lock:
            process, self._process = self._process, None
            self._ready.clear()
            self.loaded.clear()
        if process is not None:
            with contextlib.suppress(OSError, ValueError):
                process.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_process_group(process, 1.0)
        if self._session is not None:
            shutil.rmtree(self._session, ignore_errors=True)
            self._session = None

    # ------------------------------------------------------------------------------------- internals
    def _work(self, request: InferenceRequest, inputs: dict[str, Any], model_dir, device: str) -> None:
        folder, result, error = None, None, None
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"request-{request.id}-", dir=self._session_dir()))
            result = self._classify(request, folder, inputs, model_dir, device)
        except ReactKDError as exc:
            error = str(exc)
        except Exception as exc:  # never leave the GUI waiting on a request that cannot end
            _log.exception("REACT-KD inference request failed")
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if folder is not None:  # before the request ends: nothing of a finished request stays on disk
                shutil.rmtree(folder, ignore_errors=True)
        request._finish(result=result, error=error)

    def _classify(self, request: InferenceRequest, folder: Path, inputs: dict[str, Any], model_dir, device: str):
        from reactkd.images.writers import write_image
        from reactkd.inference.outputs import read_outputs

        request.stage = "writing inputs"
        paths = {name: str(write_image(image, folder / f"{name}.nrrd", compress=False))
                 for name, image in inputs.items() if image is not None}
        process = self._started()
        if request.cancelled:
            return None
        message = {"op": "classify", "id": request.id, "model": str(model_dir) if model_dir else None,
                   "device": device, "inputs": paths, "out": str(folder / "out")}
        try:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
        except (OSError, ValueError):
            pass  # the child is gone: its reader reports why
        request._replied.wait()
        reply = request.reply or {}
        if request.done:  # cancelled, or the child died
            return None
        if reply.get("event") != "result":
            raise ReactKDError(reply.get("message") or "the inference process gave no result")
        request.stage, request.fraction = "reading outputs", 0.95
        request.model_was_loaded = bool(reply.get("model_was_loaded"))
        result = read_outputs(reply["out"], reference=inputs["ct"])
        self.loaded[(str(model_dir), device)] = result.device
        return result

    def _started(self) -> subprocess.Popen:
        """The running child, starting one (and waiting for its ready event) when there is none."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                process = launch_child(self.command, self.env, stdin=subprocess.PIPE)
                self._process = process
                self._ready.clear()
                self.loaded.clear()
                threading.Thread(target=self._read_stdout, args=(process,), daemon=True).start()
                threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready.wait(0.05):
            if process.poll() is not None:
                raise ReactKDError(f"the inference process could not start ({self._why(process)})")
            if time.monotonic() > deadline:
                stop_process_group(process, 1.0)
                raise ReactKDError(f"the inference process did not start within {self.start_timeout_s:.0f} s")
        return process

    def _read_stdout(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                _log.info("reactkd serve: %s", line.rstrip())
                continue
            kind, request = event.get("event"), self._pending
            if kind == "ready":
                self._ready.set()
            elif request is None or event.get("id") != request.id:
                continue
            elif kind == "progress":
                request.stage, request.fraction = str(event.get("stage")), float(event.get("fraction", 0.0))
            elif kind in ("result", "error"):
                request._answer(event)
        process.wait()
        request = self._pending
        if request is not None and not request.done and not request.cancelled and self._owns(process):
            request._finish(error=f"the inference process stopped unexpectedly ({self._why(process)}); Slicer is "
                                  "unaffected, and the next Classify starts a new one")

    def _read_stderr(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            self.stderr_lines.append(line.rstrip("\r\n"))
            _log.debug("reactkd serve: %s", line.rstrip())

    def _owns(self, process: subprocess.Popen) -> bool:
        with self._lock:
            if self._process is process:
                self._process = None
                self._ready.clear()
                self.loaded.clear()
                return True
            return False

    def _why(self, process: subprocess.Popen) -> str:
        time.sleep(0.1)  # let the stderr reader catch the last lines
        tail = [line for line in self.stderr_lines if line.strip()]
        return exit_reason(process.poll()) + (f": {tail[-1].strip()}" if tail else "")

    def _session_dir(self) -> Path:
        if self._session is None or not self._session.is_dir():
            for root in session_roots():
                remove_stale_sessions(root)
            self._session = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}-", dir=session_roots()[0]))
        return self._session


def session_roots() -> list[Path]:
    """Where request files go, best first: memory-backed /dev/shm (a full-size CT and two maps, a few hundred MB,
    live there for about a second), else the temporary folder."""
    shm = Path("/dev/shm")
    fast = [shm] if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else []
    return [*fast, Path(tempfile.gettempdir())]


def remove_stale_sessions(root: str | os.PathLike) -> list[Path]:
    """Delete session folders left by a Slicer that was killed (its process id no longer runs)."""
    return remove_orphan_folders(root, SESSION_PREFIX)
