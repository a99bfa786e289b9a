"""Batch grading from Slicer's process: ``reactkd classify --manifest`` in a child (torch-free here)."""

from __future__ import annotations

from pathlib import Path

from reactkd.processes import slicer_python_executable, start_reactkd


def start_batch(manifest: str | Path, out_dir: str | Path, model: str | Path | None = None, device: str = "auto",
                progress=None, python: str | None = None, callbacks_in_thread: bool = False):
    """Run ``reactkd classify --manifest ... --progress json`` as a child process (Slicer's Python); returns
    its RunHandle: one {"event": "case", ...} per case, then {"event": "done", ...}; cancel stops it."""
    argv = [python or slicer_python_executable(), "-m", "reactkd", "classify", "--manifest", str(manifest),
            "--out", str(out_dir), "--device", device, "--no-render", "--progress", "json",
            *(["--model", str(model)] if model else [])]
    return start_reactkd(argv, progress, callbacks_in_thread)
