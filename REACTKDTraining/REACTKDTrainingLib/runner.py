"""Run ``reactkd`` commands (train, evaluate) in a child process with structured progress and cancel.

Qt-free and Slicer-free, so it is tested with plain Python; REACTKDTraining.py wraps it for Slicer.

The child is started as ``python -m reactkd <args> --progress json``; it prints one JSON object per
line on stdout (``{"event": "start"|"step"|"epoch"|"done"|"error", ...}``) and ``error: ...`` on
stderr for bad input. Process handling (own process group, cancel of the whole tree, reading events) is
`reactkd.processes`, shared with the REACTKD module's inference process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from reactkd.errors import ConfigError, ReactKDError
from reactkd.processes import (  # noqa: F401 - re-exported for the module and its tests
    CANCEL_GRACE_S,
    ProgressCallback,
    RunHandle,
    child_env,
    group_alive,
    new_group_options,
    reactkd_search_path,
    slicer_python_executable,
    start_reactkd,
)
from reactkd.vocabulary import STAGES


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

        `json_progress=False` leaves out ``--progress json`` for commands without it (simulate-ldct, seal):
        their stdout lines then arrive as ``{"event": "log", "message": line}``."""
        prefix = list(command or self.command or [python or self.python or sys.executable, "-m", "reactkd"])
        argv = [*prefix, *map(str, args), *(["--progress", "json"] if json_progress else [])]
        handle = start_reactkd(argv, progress, self.callbacks_in_thread, on_exit, self.env)
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
                from reactkd.package.catalog import ModelCatalog

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
