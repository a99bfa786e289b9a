"""Which Python packages the REACTKD module still needs, checked without importing or installing anything.

The module asks the user before installing: PyTorch through Slicer's PyTorch extension (it picks the
build for the computer's GPU), the rest (``Resources/requirements.txt``) with ``slicer.util.pip_install``.
This file only answers the questions; it never installs and never imports the packages it checks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

#: The module's requirements file, beside ``REACTKD.py`` once installed in Slicer.
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"

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


def parse_requirements(path: str | os.PathLike = REQUIREMENTS_FILE) -> list[Requirement]:
    """Requirements of a pip requirements file (names with version clauses; no URLs or options)."""
    requirements = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        match = _REQUIREMENT.match(line)
        if match is None or line.startswith("-"):
            raise ValueError(f"{path}: unsupported requirement line {raw.strip()!r}")
        clauses = []
        for clause in filter(None, (part.strip() for part in match.group(2).split(","))):
            parsed = _CLAUSE.match(clause)
            if parsed is None:
                raise ValueError(f"{path}: unsupported version clause {clause!r} in {raw.strip()!r}")
            clauses.append((parsed.group(1), parsed.group(2)))
        requirements.append(Requirement(match.group(1), tuple(clauses), line))
    return requirements


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


def missing_requirements(requirements_file: str | os.PathLike = REQUIREMENTS_FILE) -> list[str]:
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
