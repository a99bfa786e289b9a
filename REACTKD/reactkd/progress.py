"""Training progress: tqdm on a terminal, JSON lines on stdout for the Slicer module, or nothing."""

from __future__ import annotations

import json
import sys
import time


class Progress:
    """Reports steps and epochs. `mode`: auto (tqdm if stderr is a terminal), tqdm, json or none."""

    def __init__(self, mode: str = "auto", enabled: bool = True) -> None:
        if mode == "auto":
            mode = "tqdm" if sys.stderr.isatty() else "none"
        self.mode = mode if enabled else "none"
        self._bar = None
        self._start = time.monotonic()

    def emit(self, event: str, **fields) -> None:
        if self.mode == "json":
            print(json.dumps({"event": event, **fields}, default=float), flush=True)

    def start(self, **fields) -> None:
        self._start = time.monotonic()
        self.emit("start", **fields)

    def epoch_begin(self, epoch: int, epochs: int, steps: int) -> None:
        if self.mode == "tqdm":
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, file=sys.stderr)

    def step(self, epoch: int, step: int, steps: int, losses: dict[str, float], done_steps: int,
             total_steps: int) -> None:
        elapsed = time.monotonic() - self._start
        eta = elapsed / max(done_steps, 1) * (total_steps - done_steps)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            self._bar.update(1)
        self.emit("step", epoch=epoch, step=step, steps=steps, loss=losses, eta_s=round(eta, 1))

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.mode == "tqdm":
            text = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"epoch {epoch + 1}: {text}", file=sys.stderr, flush=True)
        self.emit("epoch", epoch=epoch, metrics=metrics)

    def done(self, **fields) -> None:
        self.emit("done", **fields)
