"""The Slicer Extensions Index's own checker (scripts/check_description_files.py, run offline by
../shared/tools/extensions-index-check/run.py) accepts the extension: category, description file layout,
icon and screenshot URLs, build dependencies. It checks the committed tree (git archive HEAD)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO.parent / "shared" / "tools" / "extensions-index-check" / "run.py"


@pytest.mark.skipif(not CHECKER.is_file(), reason=f"the Extensions Index checker is not beside this clone ({CHECKER})")
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_extensions_index_checker_passes():
    pytest.importorskip("requests")
    pytest.importorskip("jsonschema")
    run = subprocess.run([sys.executable, str(CHECKER)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
