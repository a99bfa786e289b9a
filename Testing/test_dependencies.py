"""First-use dependency check of the REACTKD module: requirement parsing, version comparison, and which
packages are reported missing (nothing is installed or imported by the check)."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from reactkd.dependencies import (
    REQUIREMENTS_FILE,
    Requirement,
    missing_requirements,
    needs_restart,
    parse_requirements,
    satisfies,
    torch_available,
    version_tuple,
)


def test_parse_requirements_reads_names_clauses_and_skips_comments(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\nmonai>=1.4  # trailing\nPOT >= 0.9.5, <2\nscikit-learn\n"
                    "pyyaml[extra]==6.*; python_version >= '3'\n", encoding="utf-8")
    parsed = parse_requirements(path)
    assert [(r.name, r.clauses) for r in parsed] == [
        ("monai", ((">=", "1.4"),)), ("POT", ((">=", "0.9.5"), ("<", "2"))), ("scikit-learn", ()),
        ("pyyaml", (("==", "6.*"),))]
    assert [r.import_name for r in parsed] == ["monai", "ot", "sklearn", "yaml"]
    path.write_text("--index-url https://example.org\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported requirement"):
        parse_requirements(path)


@pytest.mark.parametrize(("version", "clauses", "expected"), [
    ("1.4.0", ((">=", "1.4"),), True),
    ("1.3.9", ((">=", "1.4"),), False),
    ("1.10", ((">=", "1.9"),), True),  # numeric, not string, order
    ("2.5.1rc1", ((">=", "2.5.1"),), True),
    ("0.9.7", ((">=", "0.9.5"), ("<", "1")), True),
    ("1.0", ((">=", "0.9.5"), ("<", "1")), False),
    ("6.0.2", (("==", "6.*"),), True),
    ("7.0", (("==", "6.*"),), False),
    ("1.4.2", (("~=", "1.4.0"),), True),
    ("1.5.0", (("~=", "1.4.0"),), False),
    ("2.0", (("!=", "2.0.0"),), False),
    ("2.0+cu121", (("==", "2.0"),), True),
])
def test_satisfies_compares_release_numbers(version, clauses, expected):
    assert satisfies(version, clauses) is expected


def test_version_tuple():
    assert version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert version_tuple("1.4.*") == (1, 4)


def test_missing_requirements_lists_absent_and_outdated_packages_only(tmp_path):
    numpy_version = importlib.metadata.version("numpy")
    path = tmp_path / "requirements.txt"
    path.write_text(f"numpy>={numpy_version}\nnumpy>=999\nreactkd-surely-absent-package>=1\n"
                    "SimpleITK>=2.3\n", encoding="utf-8")
    assert missing_requirements(path) == ["numpy>=999", "reactkd-surely-absent-package>=1"]


def test_a_module_without_metadata_counts_as_installed(tmp_path, monkeypatch):
    # As Slicer's own SimpleITK may be: importable, but no distribution metadata to read a version from.
    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    path = tmp_path / "requirements.txt"
    path.write_text("SimpleITK>=99\nreactkd-surely-absent-package\n", encoding="utf-8")
    assert missing_requirements(path) == ["reactkd-surely-absent-package"]


def test_module_requirements_file_parses_and_excludes_torch():
    names = {r.name.lower() for r in parse_requirements(REQUIREMENTS_FILE)}
    assert "monai" in names and "torch" not in names  # torch comes from the PyTorch extension


def test_needs_restart_names_already_imported_packages():
    assert "numpy" in sys.modules
    assert needs_restart(["numpy>=999", "reactkd-surely-absent-package"]) == ["numpy"]
    assert Requirement("scikit-learn").import_name == "sklearn"


def test_torch_check_does_not_import_torch():
    had_torch = "torch" in sys.modules
    assert torch_available() is True  # the test environment has torch
    assert ("torch" in sys.modules) == had_torch
