"""Which Python packages the REACTKD modules still need, and the supported Slicer, checked without importing
anything heavy.

The modules ask the user before installing: PyTorch through Slicer's PyTorch extension (it picks the build
for the computer's GPU) with the version the pinned MONAI needs (`TORCH_REQUIREMENT`), the rest with
``slicer.util.pip_install``: ``reactkd/data/requirements-classify.txt`` before the first Classify,
``requirements-training.txt`` on top when training starts. `install_missing` does the asking and
installing through callables the module passes in, so its decisions are tested without Slicer.

This file must import on any Python a user's Slicer may have (3.9 in Slicer 5.6/5.8), so that an old
Slicer gets `unsupported_slicer`'s message instead of a traceback.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from reactkd.errors import ReactKDError
from reactkd.vocabulary import DATA_DIR

#: What Classify needs (the REACTKD module), beside ``REACTKD.py`` once installed in Slicer.
CLASSIFY_REQUIREMENTS = DATA_DIR / "requirements-classify.txt"
#: What training and evaluation need on top (the REACTKDTraining module).
TRAINING_REQUIREMENTS = DATA_DIR / "requirements-training.txt"
REQUIREMENTS_FILES = {"classify": (CLASSIFY_REQUIREMENTS,), "training": (CLASSIFY_REQUIREMENTS, TRAINING_REQUIREMENTS)}
#: torch version asked from the PyTorch extension: what the MONAI pinned in requirements-classify.txt declares
#: (a test compares them), so pip never pulls a PyPI torch over the build the extension chose.
TORCH_REQUIREMENT = ">=2.8.0"
#: Oldest Slicer supported: 5.10 moved Slicer to Python 3.12, which the package needs (3.10 at least).
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)
#: Distributions that Slicer bundles (its own builds; SimpleITK carries Slicer's image IO): never pip-installed.
#: highdicom belongs to Slicer's DICOM stack: 5.12 bundles highdicom 0.27 with pydicom 3.0.2, while 5.10 has
#: pydicom 2.4.4 and no highdicom, where installing it would replace Slicer's pydicom with 3.x under its DICOM
#: module. So DICOM SEG input (`--seg`) works in Slicer 5.12 and later, and everywhere with pip.
SLICER_BUNDLED = frozenset({"simpleitk", "scipy", "numpy", "vtk", "pip", "setuptools", "wheel", "packaging",
                            "requests", "urllib3", "certifi", "idna", "charset-normalizer", "pydicom",
                            "highdicom", "dicomweb-client", "six", "ctk", "qt", "pythonqt", "jupyter", "pillow"})

#: Distribution name (lower case) -> module it installs, where the two differ.
IMPORT_NAMES = {"pot": "ot", "scikit-learn": "sklearn", "pyyaml": "yaml", "simpleitk": "SimpleITK",
                "pillow": "PIL", "opencv-python": "cv2"}

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*$")
_CLAUSE = re.compile(r"^(~=|==|!=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)$")


@dataclass(frozen=True)
class Requirement:
    """One requirement line: a distribution name and its version clauses such as (">=", "1.4")."""

    name: str
    clauses: tuple[tuple[str, str], ...] = ()
    line: str = ""

    @property
    def import_name(self) -> str:
        key = self.name.lower()
        return IMPORT_NAMES.get(key, key.replace("-", "_"))


def parse_requirements(path: str | os.PathLike = CLASSIFY_REQUIREMENTS) -> list[Requirement]:
    """Requirements of a pip requirements file (names with version clauses; no URLs or options)."""
    requirements = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line:
            try:
                requirements.append(parse_requirement_line(line))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc} in {raw.strip()!r}") from None
    return requirements


def parse_requirement_line(line: str) -> Requirement:
    """One requirement such as "POT >= 0.9.6, <2" (extras are accepted and dropped)."""
    match = _REQUIREMENT.match(line)
    if match is None or line.startswith("-"):
        raise ValueError("unsupported requirement line")
    clauses = []
    for clause in filter(None, (part.strip() for part in match.group(2).split(","))):
        parsed = _CLAUSE.match(clause)
        if parsed is None:
            raise ValueError(f"unsupported version clause {clause!r}")
        clauses.append((parsed.group(1), parsed.group(2)))
    return Requirement(match.group(1), tuple(clauses), line)


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric release part of a version: "2.5.1rc1" -> (2, 5, 1); "1.4.*" -> (1, 4)."""
    numbers = []
    for part in version.split("+", 1)[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def _compare(left: tuple[int, ...], right: tuple[int, ...]) -> int:
    width = max(len(left), len(right))
    left, right = left + (0,) * (width - len(left)), right + (0,) * (width - len(right))
    return (left > right) - (left < right)


def satisfies(version: str, clauses: tuple[tuple[str, str], ...]) -> bool:
    """Whether `version` meets every clause (release numbers only; pre-release tags are ignored)."""
    have = version_tuple(version)
    for operator, wanted in clauses:
        want = version_tuple(wanted)
        if operator in ("==", "!=") and wanted.endswith("*"):
            same = have[:len(want)] == want
            ok = same if operator == "==" else not same
        elif operator == "~=":
            ok = _compare(have, want) >= 0 and have[:max(len(want) - 1, 1)] == want[:max(len(want) - 1, 1)]
        else:
            order = _compare(have, want)
            ok = {"==": order == 0, "!=": order != 0, ">=": order >= 0, "<=": order <= 0,
                  ">": order > 0, "<": order < 0}[operator]
        if not ok:
            return False
    return True


def installed_version(requirement: Requirement) -> str | None:
    """Installed version of the distribution; "" when its module imports but carries no metadata (a
    package built into the application, such as Slicer's SimpleITK); None when absent."""
    try:
        return importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        pass
    if importlib.util.find_spec(requirement.import_name) is not None:
        return ""
    return None


def missing_requirements(requirements_file: str | os.PathLike = CLASSIFY_REQUIREMENTS) -> list[str]:
    """Requirement lines (as pip takes them) that are absent or too old, in file order.

    A package that imports but has no version metadata counts as present: it came with the application
    and must not be replaced by a second copy from PyPI.
    """
    missing = []
    for requirement in parse_requirements(requirements_file):
        version = installed_version(requirement)
        if version is None or (version and not satisfies(version, requirement.clauses)):
            missing.append(requirement.line)
    return missing


def needs_restart(requirement_lines: list[str]) -> list[str]:
    """Of the requirements about to be installed, those whose module is already imported in this process:
    the new version only takes effect after restarting the application."""
    names = []
    for line in requirement_lines:
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        requirement = Requirement(match.group(1))
        if requirement.import_name in sys.modules:
            names.append(requirement.name)
    return names


def torch_available() -> bool:
    """Whether torch can be imported (found on the path; not imported here: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def torch_problem() -> str | None:
    """Why the installed torch will not do ("missing", or "too old: 2.2.1"), None when it will. Not imported."""
    if not torch_available():
        return "missing"
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None  # importable without metadata: built into the application, leave it
    clauses = parse_requirement_line("torch" + TORCH_REQUIREMENT).clauses
    return None if satisfies(version, clauses) else f"too old: {version}"


def unsupported_slicer(major: int, minor: int, python: tuple[int, ...] = tuple(sys.version_info[:2])) -> str | None:
    """A message for the user when this Slicer (or its Python) is older than supported, else None."""
    if (major, minor) >= MINIMUM_SLICER and tuple(python[:2]) >= MINIMUM_PYTHON:
        return None
    need = ".".join(map(str, MINIMUM_SLICER))
    return (f"REACT-KD needs 3D Slicer {need} or newer (Python {'.'.join(map(str, MINIMUM_PYTHON))}+); this is "
            f"Slicer {major}.{minor} with Python {'.'.join(map(str, python[:2]))}. Install a current Slicer from "
            "https://download.slicer.org and REACT-KD from its Extensions Manager.")


@dataclass
class InstallPlan:
    """What is missing for `kind` ("classify" or "training"): torch ("missing"/"too old: x"/None) and
    requirement lines for pip."""

    kind: str
    torch: str | None
    packages: list[str]

    @property
    def complete(self) -> bool:
        return self.torch is None and not self.packages

    def describe(self) -> str:
        """What is missing, in one line ("" when complete): for messages and skipped tests."""
        parts = ([f"PyTorch {TORCH_REQUIREMENT} ({self.torch})"] if self.torch else []) + self.packages
        return ", ".join(parts)


def install_plan(kind: str = "classify") -> InstallPlan:
    if kind not in REQUIREMENTS_FILES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(REQUIREMENTS_FILES)}")
    packages = [line for path in REQUIREMENTS_FILES[kind] for line in missing_requirements(path)]
    return InstallPlan(kind, torch_problem(), packages)


def install_missing(plan: InstallPlan, confirm, install_torch, pip_install, restart=None) -> bool:
    """Ask (`confirm(text) -> bool`), then install what `plan` lacks: torch through
    `install_torch(TORCH_REQUIREMENT) -> bool` (the PyTorch extension), packages through `pip_install(lines)`.
    When an upgraded package was already imported, `restart(names)` is called (Slicer must restart for it).
    True when everything needed is now in place in this process. A failing pip (offline, no index) raises
    ReactKDError with one line, which the module shows in a dialog."""
    if plan.complete:
        return True
    if plan.torch is not None and not install_torch(TORCH_REQUIREMENT):
        return False
    if plan.packages:
        if not confirm("REACT-KD needs these Python packages, which are not installed yet:\n\n"
                       + "\n".join(plan.packages) + "\n\nInstall them now? They are downloaded from the "
                       "Python Package Index."):
            return False
        stale = needs_restart(plan.packages)
        try:
            pip_install(plan.packages)
        except (subprocess.CalledProcessError, OSError) as exc:  # offline, no index, a failing build
            code = f"pip exit code {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise ReactKDError(f"installing {', '.join(plan.packages)} failed ({code}); check the internet "
                               "connection (pip's output is in the Python console) and try again") from None
        if stale:
            if restart is not None:
                restart(stale)
            return False
    return True
