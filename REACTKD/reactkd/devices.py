"""Compute device selection: auto picks CUDA when it is usable; asking for CUDA without it is an error."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import torch

from reactkd.errors import DeviceError


def cuda_usable() -> bool:
    """True when a CUDA device can really allocate (a CUDA build on a machine without a GPU says False)."""
    try:
        if not torch.cuda.is_available():
            return False
        torch.empty(1, device="cuda")
        return True
    except (RuntimeError, AssertionError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """Map auto|cpu|cuda|cuda:N to a usable torch.device."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if cuda_usable() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):  # anything else ("cuda0", "cudax") would make torch.device raise
        if not cuda_usable():
            raise DeviceError("CUDA was requested but no usable CUDA device is present (use --device cpu or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise DeviceError(f"unknown device {name!r} (use auto, cpu or cuda)")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch CPU work on one intra-op thread inside the block (nothing changes for CUDA).

    For many tiny operations, such as the ~4,000 small kernels of one batched GW solve: OpenMP gains nothing
    there, and on a busy CPU every parallel region waits for a descheduled worker thread. Measured on 2 cores
    with another process on one of them: one batched RGD loss took 6.3 s with 2 threads, 82 ms with one.
    Concurrent blocks are serialised by a lock: depending on the build the count is per thread (OpenMP) or
    process-wide, and interleaved set/restore of a process-wide count could leave it at 1.
    """
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
