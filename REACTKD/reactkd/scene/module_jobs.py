"""Background classification for the REACTKD module, without Qt or MRML.

The GUI reads its inputs from the scene on the main thread (`module_logic.inputs_from_nodes`), hands the
SimpleITK images to a `ClassificationJob` that loads the model (once, through a `ClassifierCache`) and
classifies in a worker thread, polls the job from a Qt timer, and applies the result to the scene on the
main thread again. The worker never touches VTK or MRML objects, which are not thread-safe.

`wait(timeout)` blocks the caller for at most `timeout` seconds while releasing the GIL, so the worker
makes progress even if the host application holds the GIL while idle.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

#: Stages a job goes through, in order (`ClassificationJob.stage`).
STAGES = ("queued", "loading model", "classifying", "done")


class ClassifierCache:
    """Loaded classifiers by (model folder, requested device), so a model loads once per session.

    `factory(model_dir, device)` builds a classifier; by default `reactkd.inference.Classifier` (imported on
    first use: it pulls in torch).
    """

    def __init__(self, factory: Callable[[Path, str], Any] | None = None) -> None:
        self._factory = factory
        self._classifiers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(model_dir: str | os.PathLike, device: str) -> tuple[str, str]:
        return str(Path(model_dir).expanduser().resolve()), (device or "auto").strip().lower()

    def is_loaded(self, model_dir: str | os.PathLike, device: str) -> bool:
        return self._key(model_dir, device) in self._classifiers

    def get(self, model_dir: str | os.PathLike, device: str = "auto"):
        """The classifier for `model_dir` on `device`, loading (and verifying) the package on first use."""
        key = self._key(model_dir, device)
        with self._lock:
            if key not in self._classifiers:
                factory = self._factory
                if factory is None:
                    from ..inference import Classifier as factory
                self._classifiers[key] = factory(Path(key[0]), key[1])
            return self._classifiers[key]

    def forget(self, model_dir: str | os.PathLike | None = None) -> None:
        """Drop the classifiers of `model_dir` (all when None), e.g. after the model was removed."""
        with self._lock:
            if model_dir is None:
                self._classifiers.clear()
                return
            folder = self._key(model_dir, "auto")[0]
            for key in [k for k in self._classifiers if k[0] == folder]:
                del self._classifiers[key]


class ClassificationJob:
    """Load a model (if needed) and classify one case in a worker thread.

    `inputs` holds the `classify` arguments: ct, mask and optionally pet_fdg, pet_act (SimpleITK images).
    Cancelling cannot stop a computation already running in the network; it marks the job so that its
    result is discarded and the GUI can move on at once.
    """

    def __init__(self, cache: ClassifierCache, model_dir: str | os.PathLike, device: str,
                 inputs: Mapping[str, Any], executor: ThreadPoolExecutor) -> None:
        self.cache = cache
        self.model_dir = Path(model_dir)
        self.device = device
        self.inputs = dict(inputs)
        self.stage = STAGES[0]
        self.cancelled = False
        self.classifier = None
        self._future: Future = executor.submit(self._run)

    def _run(self):
        self.stage = STAGES[1]
        self.classifier = self.cache.get(self.model_dir, self.device)
        if self.cancelled:
            return None
        self.stage = STAGES[2]
        result = self.classifier.classify(self.inputs["ct"], self.inputs["mask"], self.inputs.get("pet_fdg"),
                                          self.inputs.get("pet_act"))
        self.stage = STAGES[3]
        return result

    @property
    def progress(self) -> float:
        """Rough fraction done (0..1) from the stage, for a progress bar."""
        return {"queued": 0.05, "loading model": 0.2, "classifying": 0.5, "done": 1.0}[self.stage]

    def cancel(self) -> None:
        self.cancelled = True
        self._future.cancel()  # only succeeds while still queued

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to `timeout` seconds (GIL released) for the job to end; True when it has."""
        try:
            self._future.exception(timeout=timeout)
        except FutureTimeout:
            return False
        except BaseException:  # cancelled while queued
            return True
        return True

    def done(self) -> bool:
        return self._future.done()

    def result(self):
        """The ClassificationResult; re-raises the worker's error; None when cancelled."""
        if self.cancelled:
            return None
        return self._future.result()


def make_executor() -> ThreadPoolExecutor:
    """One worker: classifications run one after another, so the shared classifier is never contended."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="reactkd-classify")
