"""`reactkd serve`: a persistent classification process speaking JSON lines on stdin/stdout.

The REACTKD Slicer module runs it as a PythonSlicer child (`reactkd.inference.client`), so a model loads
once and stays warm, a cancel can kill the computation, and a crash (CUDA, out of memory) cannot take Slicer
down. Protocol, one JSON object per line:

requests (stdin)::

    {"op": "classify", "id": 1, "model": "/models/student" | null, "device": "auto",
     "inputs": {"ct": "ct.nrrd", "mask": "mask.nrrd", "pet_fdg": null, "pet_act": null}, "out": "/tmp/r1"}
    {"op": "shutdown"}

events (stdout)::

    {"event": "ready", "protocol": 1, "pid": 1234}
    {"event": "progress", "id": 1, "stage": "loading model", "fraction": 0.2}
    {"event": "result", "id": 1, "out": "/tmp/r1", "model_was_loaded": true}
    {"event": "error", "id": 1, "message": "mask has no tumour voxels"}

The result folder holds what `reactkd classify --no-render` writes (result.json, both attention maps,
graph.json), with each map cropped to its non-zero box; `outputs.read_outputs(folder, reference=ct)` turns it
back into a ClassificationResult on the CT grid. A bad request or bad input
gives an error event and the process keeps serving; anything printed by libraries goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from reactkd.errors import ReactKDError

PROTOCOL = 1
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
            from reactkd.inference.classifier import DEFAULT_MODEL as model_dir
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


def _paths(request: dict) -> tuple[dict[str, Path | None], Path]:
    inputs = request.get("inputs")
    if not isinstance(inputs, dict) or not inputs.get("ct") or not inputs.get("mask"):
        raise ReactKDError("request needs inputs.ct and inputs.mask")
    if not isinstance(request.get("out"), str) or not request["out"]:
        raise ReactKDError("request needs an output folder (out)")
    names = ("ct", "mask", "pet_fdg", "pet_act")
    return {name: (Path(inputs[name]) if inputs.get(name) else None) for name in names}, Path(request["out"])


def classify_request(request: dict, cache: ClassifierCache, send) -> None:
    """Run one classify request, sending progress events and then its result event."""
    from reactkd.images.readers import read_image
    from reactkd.inference.outputs import write_outputs

    rid = request.get("id")

    def stage(name: str) -> None:
        send({"event": "progress", "id": rid, "stage": name, "fraction": STAGES[name]})

    paths, out = _paths(request)
    stage("reading inputs")
    ct = read_image(paths["ct"], name="CT")
    mask = read_image(paths["mask"], name="mask", labels=True)
    pets = {name: read_image(paths[name], name=name) if paths[name] else None for name in ("pet_fdg", "pet_act")}
    model, device = request.get("model"), str(request.get("device") or "auto")
    was_loaded = cache.is_loaded(model, device)
    stage("loading model")
    classifier = cache.get(model, device)
    stage("classifying")
    result = classifier.classify(ct, mask, pets["pet_fdg"], pets["pet_act"])
    stage("writing outputs")
    write_outputs(result, out, ct, mask, pets["pet_fdg"], pets["pet_act"], render=False, transfer=True)
    send({"event": "result", "id": rid, "out": str(out), "model_was_loaded": was_loaded})


def serve(stdin: IO[str] | None = None, stdout: IO[str] | None = None, cache: ClassifierCache | None = None) -> int:
    """Answer requests until stdin closes or a shutdown request arrives; returns the exit code (0)."""
    stdin = stdin or sys.stdin
    channel = stdout or sys.stdout
    if stdout is None:
        sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
    cache = cache or ClassifierCache()

    def send(event: dict) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    send({"event": "ready", "protocol": PROTOCOL, "pid": os.getpid()})
    for line in stdin:
        if not line.strip():
            continue
        rid = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ReactKDError("a request must be a JSON object")
            rid = request.get("id")
            op = request.get("op")
            if op == "shutdown":
                break
            if op != "classify":
                raise ReactKDError(f"unknown request op {op!r}; expected classify or shutdown")
            classify_request(request, cache, send)
        except json.JSONDecodeError as exc:
            send({"event": "error", "id": rid, "message": f"request is not JSON ({exc.msg})"})
        except ReactKDError as exc:
            send({"event": "error", "id": rid, "message": " | ".join(str(exc).splitlines())})
        except Exception as exc:  # keep serving; the traceback goes to stderr for the log
            traceback.print_exc(file=sys.stderr)
            send({"event": "error", "id": rid, "message": f"{type(exc).__name__}: {exc}"})
    return 0
