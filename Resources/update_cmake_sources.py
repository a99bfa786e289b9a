"""Regenerate the SCRIPTS / RESOURCES lists of the modules' CMakeLists.txt from the files on disk.

    python Resources/update_cmake_sources.py          # rewrite the lists
    python Resources/update_cmake_sources.py --check  # exit 1 and say what differs

Slicer installs only the files a scripted module lists, so every .py of a module's packages (e.g.
REACTKD/reactkd/**) must be in SCRIPTS and every data file (icons, .ui, Models.json, shipped model
packages, configs) in RESOURCES. The lists live between ``# BEGIN GENERATED SCRIPTS`` /
``# END GENERATED SCRIPTS`` (and the same for RESOURCES); the rest of each CMakeLists.txt is hand-written.

What a module ships, relative to its folder:
- SCRIPTS: the .py files at its top level and every .py under its packages (top-level folders with an
  ``__init__.py``);
- RESOURCES: every file under ``Resources/`` and every non-.py file under its packages;
skipping hidden files and folders, ``__pycache__``, ``*.egg-info`` and compiled or backup files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("REACTKD", "REACTKDTraining")
LISTS = {"SCRIPTS": "MODULE_PYTHON_SCRIPTS", "RESOURCES": "MODULE_PYTHON_RESOURCES"}
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".orig", ".rej")


def _shippable(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    if any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info") for p in parts):
        return False
    return path.is_file() and not path.name.endswith(_SKIP_SUFFIXES)


def _files_under(folder: Path, root: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if _shippable(p, root)] if folder.is_dir() else []


def package_dirs(module_dir: Path) -> list[Path]:
    """Top-level folders of a module that are Python packages (shipped whole)."""
    return sorted(p for p in module_dir.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
                  and _shippable(p / "__init__.py", module_dir))


def module_sources(module_dir: str | Path) -> dict[str, list[str]]:
    """{"SCRIPTS": [...], "RESOURCES": [...]}: sorted paths relative to `module_dir`, with '/'."""
    module_dir = Path(module_dir)
    scripts = [p for p in module_dir.glob("*.py") if _shippable(p, module_dir)]
    resources = _files_under(module_dir / "Resources", module_dir)
    for package in package_dirs(module_dir):
        for path in _files_under(package, module_dir):
            (scripts if path.suffix == ".py" else resources).append(path)
    result = {}
    for kind, paths in (("SCRIPTS", scripts), ("RESOURCES", resources)):
        names = sorted({p.relative_to(module_dir).as_posix() for p in paths})
        bad = [n for n in names if re.search(r"[\s;\"'()$#\\]", n)]
        if bad:
            raise ValueError(f"{module_dir.name}: file names CMake cannot list: {bad}")
        result[kind] = names
    return result


def render_block(kind: str, items: list[str]) -> str:
    body = "".join(f"  {item}\n" for item in items)
    return (f"# BEGIN GENERATED {kind} (Resources/update_cmake_sources.py; do not edit by hand)\n"
            f"set({LISTS[kind]}\n{body}  )\n# END GENERATED {kind}\n")


def _block_pattern(kind: str) -> re.Pattern[str]:
    return re.compile(rf"^# BEGIN GENERATED {kind}\b.*?^# END GENERATED {kind}[^\n]*\n?", re.S | re.M)


def listed(cmake_text: str, kind: str) -> list[str]:
    """The paths currently listed in the generated `kind` block of a CMakeLists.txt text."""
    match = _block_pattern(kind).search(cmake_text)
    if match is None:
        raise ValueError(f"no '# BEGIN GENERATED {kind}' ... '# END GENERATED {kind}' block")
    inner = re.search(rf"set\(\s*{LISTS[kind]}\s+(.*?)\)", match.group(0), re.S)
    return inner.group(1).split() if inner else []


def updated_text(cmake_text: str, sources: dict[str, list[str]]) -> str:
    for kind, items in sources.items():
        pattern = _block_pattern(kind)
        if not pattern.search(cmake_text):
            raise ValueError(f"no '# BEGIN GENERATED {kind}' ... '# END GENERATED {kind}' block")
        cmake_text = pattern.sub(lambda _m, k=kind, i=items: render_block(k, i), cmake_text, count=1)
    return cmake_text


def stale_lists(repo: Path = REPO, modules: tuple[str, ...] = MODULES) -> list[str]:
    """Human-readable differences between the CMake lists and the files on disk (empty: up to date)."""
    problems = []
    for module in modules:
        cmake = repo / module / "CMakeLists.txt"
        text = cmake.read_text(encoding="utf-8")
        for kind, expected in module_sources(repo / module).items():
            current = listed(text, kind)
            missing = sorted(set(expected) - set(current))
            extra = sorted(set(current) - set(expected))
            if missing:
                problems.append(f"{module}/CMakeLists.txt {kind} lacks: {', '.join(missing)}")
            if extra:
                problems.append(f"{module}/CMakeLists.txt {kind} lists files that do not exist or are not "
                                f"shipped: {', '.join(extra)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale lists and exit 1; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_lists()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python Resources/update_cmake_sources.py", file=sys.stderr)
        return 1 if problems else 0
    for module in MODULES:
        cmake = REPO / module / "CMakeLists.txt"
        text = cmake.read_text(encoding="utf-8")
        new = updated_text(text, module_sources(REPO / module))
        if new != text:
            cmake.write_text(new, encoding="utf-8")
            print(f"updated {cmake.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
