"""Slicer's own process never imports torch or monai: every ``reactkd`` module that the Slicer-side files
(REACTKD.py, REACTKDLib/*, REACTKDTraining.py, REACTKDTrainingLib/*) import, at top level or inside a
function, is imported in a fresh interpreter with torch, monai and safetensors blocked, and must load
without them and leave them out of sys.modules.

Packages count too: ``import reactkd.inference.client`` runs ``reactkd/inference/__init__.py`` first, so an
``__init__`` that imports the classifier fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "REACTKD"  # holds the reactkd package
SLICER_SIDE_FILES = sorted([REPO / "REACTKD/REACTKD.py", *(REPO / "REACTKD/REACTKDLib").glob("*.py"),
                            REPO / "REACTKDTraining/REACTKDTraining.py",
                            *(REPO / "REACTKDTraining/REACTKDTrainingLib").glob("*.py")])
BLOCKED = ("torch", "monai", "safetensors")
#: Exit code of the child when an optional Slicer-side package (slicer-core's slicer, vtk) is missing.
NO_SLICER = 3


def _is_module(name: str) -> bool:
    path = PACKAGE_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def reactkd_imports(path: Path) -> set[str]:
    """Every ``reactkd`` module `path` imports, anywhere in the file; ``from reactkd.x import y`` counts
    ``reactkd.x.y`` too when y is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "reactkd"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "reactkd":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if _is_module(f"{node.module}.{alias.name}")}
    return found


MODULES = sorted(set().union(*(reactkd_imports(path) for path in SLICER_SIDE_FILES)))

CHILD = textwrap.dedent("""
    import importlib, importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: Slicer's process must not import it")
            return None

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, {root!r})
    try:
        importlib.import_module({module!r})
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("slicer", "vtk"):
            sys.exit({no_slicer})
        raise
    loaded = sorted({{name for name in sys.modules if name.split(".")[0] in BLOCKED}})
    if loaded:
        sys.exit(f"loaded anyway: {{loaded}}")
""")


def test_the_slicer_side_imports_are_found():
    assert {"reactkd.inference.client", "reactkd.inference.batch_client", "reactkd.inference.outputs",
            "reactkd.cohort.manifest", "reactkd.package.catalog", "reactkd.dependencies"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_slicer_side_import_loads_without_torch_or_monai(module):
    code = CHILD.format(blocked=BLOCKED, root=str(PACKAGE_ROOT), module=module, no_slicer=NO_SLICER)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    if result.returncode == NO_SLICER:
        pytest.skip("slicer-core is not installed")
    assert result.returncode == 0, f"{module}: {result.stderr.strip().splitlines()[-1:]}"
