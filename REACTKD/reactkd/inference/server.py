"""`reactkd serve`: a persistent classification process speaking JSON lines on stdin/stdout.

The REACTKD Slicer module runs it as a PythonSlicer child (`reactkd.inference.client`), so a model loads
once and stays warm, a cancel can kill the computation, and a crash (CUDA, out of memory) cannot take Slicer
down. Protocol, one JSON object per line (UTF-8):

requests (stdin)::

    {"op": "classify", "id": 1, "model": "/models/student" | null, "device": "auto",
     "inputs": {"ct": <image>, "mask": <image>, "pet_fdg": null, "pet_act": null}, "out": "/tmp/r1",
     "maps": "files" | "raw", "session": "/dev/shm/reactkd-inference-<pid>-<random>" (optional)}
    {"op": "shutdown"}

events (stdout)::

    {"event": "ready", "protocol": 2, "pid": 1234}
    {"event": "progress", "id": 1, "stage": "loading model", "fraction": 0.2}
    {"event": "result", "id": 1, "out": "/tmp/r1", "model_was_loaded": true}
    {"event": "error", "id": 1, "message": "mask has no tumour voxels"}

An <image> is an image file name, or a raw volume (`reactkd.inference.transfer`: voxels in a file, geometry
in the request), which is how the Slicer module passes its volumes. With ``"maps": "files"`` (the default) the
`out` folder receives what `reactkd classify --no-render` writes, each map cropped to its non-zero box
(`outputs.read_outputs(folder, reference=ct)` reads it back); with ``"maps": "raw"`` it receives each map's
box of the CT grid as raw voxels, and the result event carries ``summary`` (result.json), ``graph`` and
``maps`` (their descriptors). Nothing is written over an input (`check_output`).

A bad request or bad input (invalid UTF-8 included) gives an error event and the process keeps serving;
anything printed by libraries goes to stderr. The process ends when stdin closes, when the client stops
reading its events, or when its parent dies, and then removes the session folders it was named: a client that
was killed leaves no patient data in /dev/shm.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from reactkd.atomic import own_real_folder
from reactkd.errors import ReactKDError
from reactkd.inference.transfer import SESSION_PREFIX

PROTOCOL = 2
#: How often the server checks that its parent still runs (POSIX).
PARENT_POLL_S = 0.5
#: The maps of a classification, by result attribute, and their raw file names (``"maps": "raw"``).
RAW_MAPS = {"attention_cbam": "attention_cbam.raw", "attention_gradcam": "attention_gradcam.raw"}
#: Stages of a classify request, with the rough fraction done when each starts.
STAGES = {"reading inputs": 0.05, "loading model": 0.15, "classifying": 0.35, "writing outputs": 0.9}


class ClassifierCache:
    """Loaded classifiers by (model folder, requested device), so a model loads once per process.
    `factory(model_dir, device)` builds one; by default `reactkd.inference.classifier.Classifier` (pulls in torch)."""

    def __init__(self, factory=None) -> None:
        self._factory = factory
        self._classifiers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(model_dir: str | os.PathLike | None, device: str) -> tuple[str, str]:
        if model_dir is None:
            from reactkd.vocabulary import DEFAULT_MODEL as model_dir
        return str(Path(model_dir).expanduser().resolve()), (device or "auto").strip().lower()

    def is_loaded(self, model_dir, device: str) -> bool:
        return self.key(model_dir, device) in self._classifiers

    def get(self, model_dir, device: str = "auto"):
        """The classifier for `model_dir` on `device`, loading (and verifying) the package on first use."""
        key = self.key(model_dir, device)
        with self._lock:
            if key not in self._classifiers:
                factory = self._factory
                if factory is None:
                    from reactkd.inference.classifier import Classifier as factory
                self._classifiers[key] = factory(Path(key[0]), key[1])
            return self._classifiers[key]


class ClientGone(Exception):
    """The client stopped reading events (it died or closed the pipe): nothing is left to serve."""


def _request_inputs(request: dict) -> tuple[dict[str, Any], Path]:
    inputs = request.get("inputs")
    if not isinstance(inputs, dict) or not inputs.get("ct") or not inputs.get("mask"):
        raise ReactKDError("request needs inputs.ct and inputs.mask")
    if not isinstance(request.get("out"), str) or not request["out"]:
        raise ReactKDError("request needs an output folder (out)")
    names = ("ct", "mask", "pet_fdg", "pet_act")
    return {name: inputs.get(name) or None for name in names}, Path(request["out"])


def _input_files(given: dict[str, Any]) -> list[str]:
    """The files a request's inputs are read from (an image file, or a raw volume's voxel file)."""
    files = [spec.get("raw") if isinstance(spec, dict) else spec for spec in given.values()]
    return [name for name in files if isinstance(name, str)]


def _read_input(spec, name: str, labels: bool = False):
    from reactkd.images.readers import read_image
    from reactkd.inference.transfer import read_volume

    if isinstance(spec, str):
        return read_image(spec, name=name, labels=labels)
    return read_volume(spec, name, labels=labels)


def classify_request(request: dict, cache: ClassifierCache, send) -> None:
    """Run one classify request, sending progress events and then its result event."""
    from reactkd.inference.outputs import OUTPUT_FILES
    from reactkd.output_paths import check_output

    rid = request.get("id")

    def stage(name: str) -> None:
        send({"event": "progress", "id": rid, "stage": name, "fraction": STAGES[name]})

    given, out = _request_inputs(request)
    raw_maps = request.get("maps", "files") == "raw"
    if request.get("maps", "files") not in ("files", "raw"):
        raise ReactKDError(f"unknown maps {request.get('maps')!r}; expected files or raw")
    # Before any work: an `out` that holds an input must never be written over.
    check_output(out, "out", folder=True, inputs=_input_files(given),
                 names=list(RAW_MAPS.values()) if raw_maps else OUTPUT_FILES)
    stage("reading inputs")
    ct = _read_input(given["ct"], "CT")
    mask = _read_input(given["mask"], "mask", labels=True)
    pets = {name: _read_input(given[name], name) if given[name] else None for name in ("pet_fdg", "pet_act")}
    model, device = request.get("model"), str(request.get("device") or "auto")
    was_loaded = cache.is_loaded(model, device)
    stage("loading model")
    classifier = cache.get(model, device)
    stage("classifying")
    # Raw maps travel as their crop box: the client builds the full-size maps once (not the server as well).
    result = classifier.classify(ct, mask, pets["pet_fdg"], pets["pet_act"], maps_on_ct_grid=not raw_maps)
    stage("writing outputs")
    event = {"event": "result", "id": rid, "out": str(out), "model_was_loaded": was_loaded}
    if raw_maps:
        event.update(summary=result.to_json(), graph=result.graph, maps=_write_raw_maps(result, out))
    else:
        from reactkd.inference.outputs import write_outputs

        write_outputs(result, out, ct, mask, pets["pet_fdg"], pets["pet_act"], render=False, transfer=True)
    send(event)


def _write_raw_maps(result, out: Path) -> dict[str, dict]:
    """Each map's box of the CT grid as raw voxels in `out`; returns their descriptors. A map is either the
    crop box itself (`Classifier.classify(maps_on_ct_grid=False)`) or on the whole CT grid, zero outside the
    crop box by construction of `preprocessing.to_native`."""
    import SimpleITK as sitk

    from reactkd.inference.transfer import write_box

    out.mkdir(exist_ok=True)
    native = getattr(getattr(result, "preprocessed", None), "native", None)
    ct_size = tuple(native.size) if native is not None else None
    maps = {}
    for name, file_name in RAW_MAPS.items():
        image = getattr(result, name)
        array = sitk.GetArrayViewFromImage(image)
        box = _crop_box(result, ct_size or image.GetSize())
        (x0, x1), (y0, y1), (z0, z1) = box
        if tuple(image.GetSize()) != (x1 - x0, y1 - y0, z1 - z0):  # a map on the whole grid: its box
            array = array[z0:z1, y0:y1, x0:x1]
        maps[name] = write_box(array, (x0, y0, z0), out / file_name)
    return maps


def _crop_box(result, size: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The native (x, y, z) [start, stop) box outside which the maps are zero; the whole grid when unknown."""
    case = getattr(result, "preprocessed", None)
    box = tuple(tuple(int(v) for v in pair) for pair in getattr(case, "crop_index", ()) or ())
    if len(box) == 3 and all(0 <= lo < hi <= n for (lo, hi), n in zip(box, size)):
        return box
    return tuple((0, n) for n in size)


class SessionFolders:
    """The client session folders a server was named; removed when the server ends, so a killed client's
    inputs and maps do not stay in /dev/shm. Only a real folder (no symlink) of this user whose name is a
    session's and that holds the request's `out` is accepted: a request cannot make the server delete
    anything else."""

    def __init__(self) -> None:
        self.folders: set[str] = set()
        self._lock = threading.Lock()

    def add(self, request: dict) -> None:
        session, out = request.get("session"), request.get("out")
        if not isinstance(session, str) or not isinstance(out, str) or not session or not out:
            return
        folder = Path(os.path.abspath(session))
        inside = Path(os.path.abspath(out)).is_relative_to(folder) and folder != Path(os.path.abspath(out))
        if folder.name.startswith(SESSION_PREFIX) and inside and own_real_folder(folder):
            with self._lock:
                self.folders.add(str(folder))

    def remove_all(self) -> None:
        with self._lock:
            folders, self.folders = self.folders, set()
        for folder in folders:
            if own_real_folder(Path(folder)):
                shutil.rmtree(folder, ignore_errors=True)


def _exit_with_parent(sessions: SessionFolders) -> None:
    """End this process (after removing its sessions) as soon as its parent dies, even mid-classification:
    stdin may stay open when another process inherited the pipe, and nobody would read the answer."""
    parent = os.getppid()
    if os.name == "nt" or parent <= 1:  # pragma: no cover - Windows, or already orphaned
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        sessions.remove_all()
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="reactkd-serve-parent-watch").start()


def _decoded(line: bytes | str) -> str:
    return line if isinstance(line, str) else line.decode("utf-8")


def serve(stdin: IO[str] | None = None, stdout: IO[str] | None = None, cache: ClassifierCache | None = None) -> int:
    """Answer requests until stdin closes, a shutdown request arrives or the client goes; returns the exit
    code (0). The session folders named by requests are removed on the way out."""
    process_stdin = stdin is None
    stdin = stdin or sys.stdin
    # Bytes, decoded line by line: one invalid UTF-8 byte spoils its own request, not the stream.
    lines = getattr(stdin, "buffer", stdin)
    channel = stdout or sys.stdout
    if stdout is None:
        sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
    cache = cache or ClassifierCache()
    sessions = SessionFolders()
    if process_stdin:
        _exit_with_parent(sessions)

    def send(event: dict) -> None:
        try:
            channel.write(json.dumps(event) + "\n")
            channel.flush()
        except (OSError, ValueError):  # a closed pipe: the client is gone
            raise ClientGone from None

    try:
        send({"event": "ready", "protocol": PROTOCOL, "pid": os.getpid()})
        for raw in lines:
            rid = None
            try:
                line = _decoded(raw)
                if not line.strip():
                    continue
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ReactKDError("a request must be a JSON object")
                rid = request.get("id")
                op = request.get("op")
                if op == "shutdown":
                    break
                if op != "classify":
                    raise ReactKDError(f"unknown request op {op!r}; expected classify or shutdown")
                sessions.add(request)
                classify_request(request, cache, send)
            except ClientGone:
                break
            except UnicodeDecodeError as exc:
                send({"event": "error", "id": None, "message": f"request is not valid UTF-8 (byte "
                                                               f"{exc.object[exc.start]:#04x} at {exc.start})"})
            except json.JSONDecodeError as exc:
                send({"event": "error", "id": rid, "message": f"request is not JSON ({exc.msg})"})
            except ReactKDError as exc:
                send({"event": "error", "id": rid, "message": " | ".join(str(exc).splitlines())})
            except Exception as exc:  # keep serving; the traceback goes to stderr for the log
                traceback.print_exc(file=sys.stderr)
                send({"event": "error", "id": rid, "message": " | ".join(f"{type(exc).__name__}: {exc}".splitlines())})
    except ClientGone:
        pass
    finally:
        sessions.remove_all()
    return 0
