"""`reactkd serve` says "ready" before torch is imported, so the client's start timeout
(`inference.client.START_TIMEOUT_S`) covers only the interpreter's start, never a slow cold import of torch."""

from __future__ import annotations

import json
import subprocess
import sys


def test_ready_comes_before_torch_is_imported():
    script = ("import io, sys\nfrom reactkd.inference.server import serve\nout = io.StringIO()\n"
              "serve(io.StringIO(''), out)\nprint(out.getvalue().splitlines()[0])\nprint('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    ready, torch_loaded = done.stdout.splitlines()[-2:]
    assert json.loads(ready)["event"] == "ready" and torch_loaded == "False"
