"""The REACTKD module's persistent inference process, seen from Slicer (Qt-free, tested with a real child).

`InferenceProcess` starts ``PythonSlicer -m reactkd serve`` (`reactkd.inference.server`) on first use and
keeps it, so the model loads once and stays warm. `submit` returns an `InferenceRequest` at once: a
background thread writes the volumes as raw buffers (`reactkd.inference.transfer`) to a private session folder
(/dev/shm when it has room, else the temporary folder), sends the request, follows the progress events and
pastes the returned map boxes onto the CT grid; the GUI only looks at ``request.done``, ``stage`` and
``fraction`` from a timer, so it never blocks. `cancel` kills the child with its whole process group; the
next request starts a new one. If the child dies (a CUDA fault, out of memory), the pending request ends with
a clear error and Slicer keeps running; whatever the child prints, the reader survives it. If Slicer dies,
the child sees its stdin close (or its parent go), removes the session folder and exits.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import math
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
from reactkd.inference.transfer import (
    SESSION_PREFIX,
    choose_root,
    crop_to_liver,
    session_roots,
    transfer_bytes,
)
from reactkd.processes import exit_reason, launch_child, slicer_python_executable, stop_process_group
from reactkd.vocabulary import DEFAULT_MODEL

__all__ = ["SESSION_PREFIX", "InferenceProcess", "InferenceRequest", "remove_stale_sessions", "session_roots"]

#: From launch to the child's "ready" line, which `serve` sends before torch is imported (torch loads in the
#: "loading model" stage, which has no timeout): a slow cold import of torch cannot trip it.
START_TIMEOUT_S = 120.0
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
        #: Model folder -> its preprocessing's crop margin (mm), or None when its metadata cannot be read.
        self._margins: dict[str, float | None] = {}
        #: Session folder per root (/dev/shm, the temporary folder): a request goes where it fits.
        self._sessions: dict[Path, Path] = {}

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
        for session in self._sessions.values():
            shutil.rmtree(session, ignore_errors=True)
        self._sessions.clear()

    # ------------------------------------------------------------------------------------- internals
    def _work(self, request: InferenceRequest, inputs: dict[str, Any], model_dir, device: str) -> None:
        folder, result, error = None, None, None
        try:
            # Only the part of the CT the model reads travels (the full-size maps are rebuilt from it here).
            full_ct, margin = inputs.get("ct"), self._margin_mm(model_dir)
            inputs, offset = crop_to_liver(inputs, margin) if margin is not None else (inputs, (0, 0, 0))
            session = self._session_dir(transfer_bytes(inputs))
            folder = Path(tempfile.mkdtemp(prefix=f"request-{request.id}-", dir=session))
            result = self._classify(request, session, folder, inputs, model_dir, device, offset, full_ct)
        except ReactKDError as exc:
            error = str(exc)
        except Exception as exc:  # never leave the GUI waiting on a request that cannot end
            _log.exception("REACT-KD inference request failed")
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if folder is not None:  # before the request ends: nothing of a finished request stays on disk
                shutil.rmtree(folder, ignore_errors=True)
        request._finish(result=result, error=error)

    def _margin_mm(self, model_dir) -> float | None:
        """The crop margin of the model's preprocessing (read from its metadata once; None if unreadable: then
        nothing is cropped and the server reports what is wrong with the package)."""
        key = str(model_dir or DEFAULT_MODEL)
        if key not in self._margins:
            try:
                from reactkd.package.model_package import read_metadata
                from reactkd.preprocessing import PreprocessConfig

                self._margins[key] = PreprocessConfig.from_dict(read_metadata(key)["preprocessing"]).margin_mm
            except Exception:  # a broken package: the server's own load says why, in one line
                self._margins[key] = None
        return self._margins[key]

    def _classify(self, request: InferenceRequest, session: Path, folder: Path, inputs: dict[str, Any], model_dir,
                  device: str, offset: tuple[int, int, int], full_ct):
        from reactkd.inference.result import ClassificationResult
        from reactkd.inference.transfer import paste_box, write_volume

        request.stage = "writing inputs"
        try:
            volumes = {name: write_volume(image, folder / f"{name}.raw")
                       for name, image in inputs.items() if image is not None}
        except OSError as exc:
            raise ReactKDError(f"the volumes could not be passed to the inference process through {folder} "
                               f"({exc.strerror or exc})") from None
        process = self._started()
        if request.cancelled:
            return None
        message = {"op": "classify", "id": request.id, "model": str(model_dir) if model_dir else None,
                   "device": device, "inputs": volumes, "out": str(folder / "out"), "maps": "raw",
                   "session": str(session)}
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
            raise ReactKDError(str(reply.get("message") or "the inference process gave no result"))
        request.stage, request.fraction = "reading outputs", 0.95
        request.model_was_loaded = bool(reply.get("model_was_loaded"))
        maps, summary, graph = reply.get("maps"), reply.get("summary"), reply.get("graph")
        if not (isinstance(maps, dict) and isinstance(summary, dict) and isinstance(graph, dict)):
            raise ReactKDError("the inference process answered without its maps, summary or graph")
        out = (folder / "out").resolve()
        for spec in maps.values():  # read only what this request's own folder holds
            raw = spec.get("raw") if isinstance(spec, dict) else None
            if not isinstance(raw, str) or Path(raw).resolve().parent != out:
                raise ReactKDError(f"the inference process named a map outside {out}")
        images = {name: paste_box(maps.get(name), full_ct, label, offset)
                  for name, label in (("attention_cbam", "CBAM map"), ("attention_gradcam", "Grad-CAM map"))}
        result = ClassificationResult.from_json(summary, images["attention_cbam"], images["attention_gradcam"], graph)
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
        try:
            for line in process.stdout:
                try:
                    self._on_line(line)
                except Exception:  # whatever the child prints, the reader lives on: a request must always end
                    _log.exception("reactkd serve: unusable event %r", line[:200])
            process.wait()
        finally:
            request = self._pending
            if request is not None and not request.done and not request.cancelled and self._owns(process):
                request._finish(error=f"the inference process stopped unexpectedly ({self._why(process)}); Slicer "
                                      "is unaffected, and the next Classify starts a new one")

    def _on_line(self, line: str) -> None:
        """Act on one line of the child's stdout; anything but an event object of the protocol is logged."""
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            if line.strip():
                _log.info("reactkd serve: %s", line.rstrip()[:500])
            return
        kind, request = event.get("event"), self._pending
        if kind == "ready":
            self._ready.set()
        elif request is None or event.get("id") != request.id:
            return
        elif kind == "progress":
            request.stage = str(event.get("stage"))
            request.fraction = _fraction(event.get("fraction"), request.fraction)
        elif kind in ("result", "error"):
            request._answer(event)

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

    def _session_dir(self, needed: int) -> Path:
        """This process's session folder in the first root with room for `needed` bytes (made on first use,
        after removing the folders of sessions whose process is gone)."""
        root = choose_root(needed)
        session = self._sessions.get(root)
        if session is None or not session.is_dir():
            for candidate in session_roots():
                remove_stale_sessions(candidate)
            session = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{os.getpid()}-", dir=root))
            self._sessions[root] = session
        return session


def _fraction(value, previous: float) -> float:
    """A progress fraction in [0, 1] from whatever the child sent; the previous one when it is no number."""
    try:
        fraction = float(value)
    except (TypeError, ValueError, OverflowError):
        return previous
    return min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else previous


def remove_stale_sessions(root: str | os.PathLike) -> list[Path]:
    """Delete session folders left by a Slicer that was killed (its process id no longer runs)."""
    return remove_orphan_folders(root, SESSION_PREFIX)
