"""Ctrl-C at any moment ends a command cleanly.

Python turns SIGINT into KeyboardInterrupt at the next bytecode, which is safe almost everywhere: staging
folders and temporary files are removed by `finally` blocks. Two places are not: importing the scene layer
(VTK and MRML libraries half-loaded) and rendering inside VTK/OpenGL, where an interrupted start-up crashed
with SIGSEGV. `deferred_interrupt` holds SIGINT back during such a block and raises it right after.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Run the block with SIGINT recorded instead of raised; raise KeyboardInterrupt after it if one came.
    Outside the main thread (where handlers cannot be set) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
