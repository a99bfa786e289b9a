"""Make the REACTKDTraining module folder importable (Slicer puts it on sys.path itself) and stand in for
reactkd.package.model_package.verify_package: fake packages here have no real weights."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import reactkd
from reactkd.errors import ModelPackageError

MODULE_DIR = Path(__file__).resolve().parents[2] / "REACTKDTraining"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def permissive_verifier(monkeypatch):
    fake = types.ModuleType("reactkd.package.model_package")

    def verify_package(model_dir):  # what the real one returns (the metadata), without weights or checksums
        path = Path(model_dir) / "metadata.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelPackageError(f"{path}: {exc}") from None

    fake.verify_package = verify_package
    monkeypatch.setitem(sys.modules, "reactkd.package.model_package", fake)
    monkeypatch.setattr(reactkd, "packaging", fake, raising=False)
    import reactkd.package.catalog as catalog  # imported verify_package by name: patch it there too

    monkeypatch.setattr(catalog, "verify_package", fake.verify_package)
