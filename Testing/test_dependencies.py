"""First-use dependency check of the REACTKD module: requirement parsing, version comparison, and which
packages are reported missing (nothing is installed or imported by the check)."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from reactkd.dependencies import (
    CLASSIFY_REQUIREMENTS,
    SLICER_BUNDLED,
    TORCH_REQUIREMENT,
    TRAINING_REQUIREMENTS,
    InstallPlan,
    Requirement,
    install_missing,
    install_plan,
    missing_requirements,
    needs_restart,
    parse_requirement_line,
    parse_requirements,
    satisfies,
    torch_problem,
    unsupported_slicer,
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
    names = {r.name.lower() for r in parse_requirements(CLASSIFY_REQUIREMENTS)}
    assert "monai" in names and "torch" not in names  # torch comes from the PyTorch extension


def test_needs_restart_names_already_imported_packages():
    assert "numpy" in sys.modules
    assert needs_restart(["numpy>=999", "reactkd-surely-absent-package"]) == ["numpy"]
    assert Requirement("scikit-learn").import_name == "sklearn"


def test_torch_check_does_not_import_torch():
    # A fresh interpreter: in this one other test modules have imported torch already.
    code = ("import sys; from reactkd.dependencies import torch_available; "
            "print(torch_available(), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]


# ------------------------------------------------------------------------------ Slicer first-use contract
@pytest.mark.parametrize("path", [CLASSIFY_REQUIREMENTS, TRAINING_REQUIREMENTS])
def test_requirements_never_replace_what_slicer_bundles_nor_torch(path):
    names = {r.name.lower() for r in parse_requirements(path)}
    assert names, path
    assert not names & SLICER_BUNDLED, f"{path.name} would pip-install over Slicer's own {names & SLICER_BUNDLED}"
    assert "torch" not in names  # the PyTorch extension installs it, with TORCH_REQUIREMENT


def test_floors_match_the_code():
    training = {r.name.lower(): r for r in parse_requirements(TRAINING_REQUIREMENTS)}
    assert not satisfies("0.9.5", training["pot"].clauses)  # ot.batch arrived in POT 0.9.6
    assert satisfies("0.9.6", training["pot"].clauses)
    classify = {r.name.lower(): r for r in parse_requirements(CLASSIFY_REQUIREMENTS)}
    assert "pot" not in classify and "matplotlib" not in classify  # training-only, installed when training starts


def test_torch_requirement_is_what_the_pinned_monai_declares():
    pin = {r.name.lower(): r for r in parse_requirements(CLASSIFY_REQUIREMENTS)}["monai"]
    assert pin.clauses and pin.clauses[0][0] == "==", "MONAI is pinned so its torch requirement is known"
    assert importlib.metadata.version("monai") == pin.clauses[0][1], "the tests must run the pinned MONAI"
    declared = [r for r in importlib.metadata.requires("monai") if r.replace(" ", "").startswith("torch>")
                or r.replace(" ", "").startswith("torch=")]
    assert [d.replace(" ", "").split(";")[0] for d in declared] == ["torch" + TORCH_REQUIREMENT]
    assert satisfies(importlib.metadata.version("torch"), parse_requirement_line("torch" + TORCH_REQUIREMENT).clauses)


def test_old_slicer_gets_a_message_not_a_traceback():
    assert unsupported_slicer(5, 10, (3, 12)) is None and unsupported_slicer(6, 0, (3, 13)) is None
    message = unsupported_slicer(5, 8, (3, 9))
    assert "5.10 or newer" in message and "Slicer 5.8" in message and "3.9" in message
    assert unsupported_slicer(5, 10, (3, 9)) is not None


@pytest.mark.parametrize("relative", ["REACTKD/REACTKD.py", "REACTKD/REACTKDLib/logic.py", "REACTKD/REACTKDLib/self_test.py",
                                      "REACTKD/REACTKDLib/widget.py", "REACTKD/REACTKDLib/parameters.py",
                                      "REACTKDTraining/REACTKDTraining.py", "REACTKDTraining/REACTKDTrainingLib/logic.py",
                                      "REACTKDTraining/REACTKDTrainingLib/self_test.py",
                                      "REACTKD/reactkd/__init__.py", "REACTKD/reactkd/dependencies.py",
                                      "REACTKD/reactkd/errors.py"])
def test_what_an_old_slicer_imports_first_parses_on_python_3_9(relative):
    """The version check must be reached on Slicer 5.6/5.8 (Python 3.9) before anything newer is parsed."""
    path = Path(__file__).resolve().parents[1] / relative
    ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))


class Recorder:
    def __init__(self, answer=True, torch_ok=True):
        self.calls, self.answer, self.torch_ok = [], answer, torch_ok

    def confirm(self, text):
        self.calls.append(("confirm", text))
        return self.answer

    def install_torch(self, requirement):
        self.calls.append(("torch", requirement))
        return self.torch_ok

    def pip(self, lines):
        self.calls.append(("pip", list(lines)))

    def restart(self, names):
        self.calls.append(("restart", list(names)))


def test_install_missing_asks_then_installs_torch_first_then_packages():
    r = Recorder()
    plan = InstallPlan("training", "missing", ["reactkd-surely-absent-package>=1"])
    assert install_missing(plan, r.confirm, r.install_torch, r.pip, r.restart) is True
    assert [c[0] for c in r.calls] == ["torch", "confirm", "pip"]
    assert r.calls[0] == ("torch", TORCH_REQUIREMENT) and "reactkd-surely-absent-package>=1" in r.calls[1][1]


def test_install_missing_stops_when_refused_and_asks_restart_for_loaded_packages():
    refused = Recorder(answer=False)
    assert not install_missing(InstallPlan("classify", None, ["x>=1"]), refused.confirm, refused.install_torch,
                               refused.pip, refused.restart)
    assert [c[0] for c in refused.calls] == ["confirm"]
    no_torch = Recorder(torch_ok=False)
    assert not install_missing(InstallPlan("classify", "too old: 2.2", ["x"]), no_torch.confirm,
                               no_torch.install_torch, no_torch.pip)
    assert [c[0] for c in no_torch.calls] == ["torch"]
    loaded = Recorder()
    assert not install_missing(InstallPlan("classify", None, ["numpy>=999"]), loaded.confirm, loaded.install_torch,
                               loaded.pip, loaded.restart)
    assert loaded.calls[-1] == ("restart", ["numpy"])
    nothing = Recorder()
    assert install_missing(InstallPlan("classify", None, []), nothing.confirm, nothing.install_torch, nothing.pip)
    assert nothing.calls == []


def test_install_plan_of_this_environment_is_complete():
    assert install_plan("classify").complete and install_plan("training").complete
    assert torch_problem() is None
    with pytest.raises(ValueError, match="unknown kind"):
        install_plan("everything")


def test_plan_description_names_what_is_missing():
    assert InstallPlan("classify", None, []).describe() == ""
    text = InstallPlan("classify", "missing", ["monai==1.6.1", "einops>=0.7"]).describe()
    assert text == f"PyTorch {TORCH_REQUIREMENT} (missing), monai==1.6.1, einops>=0.7"
