"""Make the REACTKDTraining module folder importable (Slicer puts it on sys.path itself) and stand in for
reactkd.package.model_package.verify_package: fake packages here have no real weights."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import reactkd

MODULE_DIR = Path(__file__).resolve().parents[2] / "REACTKDTraining"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def permissive_verifier(monkeypatch):
    fake = types.ModuleType("reactkd.package.model_package")
    fake.verify_package = lambda model_dir: None
    monkeypatch.setitem(sys.modules, "reactkd.package.model_package", fake)
    monkeypatch.setattr(reactkd, "packaging", fake, raising=False)
