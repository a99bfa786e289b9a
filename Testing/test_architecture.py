"""The layering of docs/architecture.md, measured from the code: every import of the `reactkd` package (at the
top of a file or inside a function) runs down a floor or stays in its own folder, no files import each other
in a loop, the core never imports Qt, Slicer (outside scene/) or the module shells, and the module shells
import only downward (REACTKD.py -> REACTKDLib -> reactkd)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "REACTKD" / "reactkd"

#: Floors, lowest first: a part may import parts of lower floors only, never a part of its own floor.
FLOORS = (
    ("vocabulary", "errors"),
    ("interrupts", "atomic", "processes", "output_paths", "devices", "progress", "dependencies", "scores",
     "conformal", "ood", "temperature", "json_files", "memory"),
    ("images",),
    ("preprocessing", "graph", "ldct"),
    ("models", "losses"),
    ("cohort", "package", "scene"),
    ("training", "evaluation", "inference"),
    ("cli",),
    ("entry",),
    ("__main__",),
)
FLOOR_OF = {part: floor for floor, parts in enumerate(FLOORS) for part in parts}
#: Outside packages that only some parts may import.
RESTRICTED = {"slicer": {"scene"}, "vtk": {"scene"}, "qt": set(), "ctk": set(),
              "REACTKDLib": set(), "REACTKDTrainingLib": set(), "REACTKD": set(), "REACTKDTraining": set()}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            # `from reactkd.cohort import manifest` imports the module reactkd.cohort.manifest
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names
                      if (root / (base + "." + alias.name).replace(".", "/")).with_suffix(".py").exists()
                      or (root / (base + "." + alias.name).replace(".", "/") / "__init__.py").exists()]
    return found


def part_of(module: str) -> str | None:
    """The top-level part of `reactkd` a module belongs to (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "reactkd" and len(parts) > 1 else None


def core_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_floor():
    parts = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in core_files()} - {"__init__"}
    assert sorted(parts - set(FLOOR_OF)) == [], "add the new part to FLOORS here and to docs/architecture.md"
    assert sorted(set(FLOOR_OF) - parts) == [], "a floor names a part that no longer exists"


def upward_imports(files: list[Path], root: Path) -> list[str]:
    problems = []
    for path in files:
        importer = part_of(module_name(path, root))
        for module, line in imports_of(path, root):
            top = module.split(".")[0]
            if top in RESTRICTED and importer not in RESTRICTED[top]:
                problems.append(f"{path.relative_to(root)}:{line} imports {module}")
            imported = part_of(module)
            if top != "reactkd" or imported is None or importer is None or imported == importer:
                continue
            if imported not in FLOOR_OF or FLOOR_OF[imported] >= FLOOR_OF[importer]:
                kind = "its own floor" if FLOOR_OF.get(imported) == FLOOR_OF[importer] else "a higher floor"
                problems.append(f"{path.relative_to(root)}:{line} ({importer}) imports {module} ({imported}, {kind})")
    return problems


def test_no_import_runs_up_a_floor_or_across_one():
    assert upward_imports(core_files(), PACKAGE.parent) == []


def import_cycles(files: list[Path], root: Path) -> list[list[str]]:
    """Strongly connected groups of more than one file in the import graph (Tarjan)."""
    names = {module_name(path, root): path for path in files}
    graph = defaultdict(set)
    for name, path in names.items():
        for module, _ in imports_of(path, root):
            if module in names and module != name and not names[module].name == "__init__.py":
                graph[name].add(module)
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(names):
        if name not in index:
            visit(name)
    return groups


def test_no_files_import_each_other_in_a_loop():
    assert import_cycles(core_files(), PACKAGE.parent) == []


#: The one import across the two modules: REACTKDTraining asks for its packages with REACTKD's first-use
#: installer (Slicer's dialogs, pip_install, the PyTorch extension), which both modules share; never the reverse.
SHARED_ACROSS_MODULES = {"REACTKDTraining": {"REACTKDLib.first_use"}}


@pytest.mark.parametrize("module", ["REACTKD", "REACTKDTraining"])
def test_module_shells_import_only_downward(module):
    """Shell (REACTKD.py) -> Lib (REACTKDLib/) -> core (reactkd): a Lib never imports its shell, nor the other
    module (but for SHARED_ACROSS_MODULES); no loop between the Lib's files."""
    folder = REPO / module
    lib = sorted((folder / f"{module}Lib").glob("*.py"))
    problems = []
    for path in lib:
        for imported, line in imports_of(path, folder):
            if imported in SHARED_ACROSS_MODULES.get(module, set()):
                continue
            if imported.split(".")[0] in {"REACTKD", "REACTKDTraining", "REACTKDLib", "REACTKDTrainingLib"} - {
                    f"{module}Lib"}:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert problems == []
    assert import_cycles(lib, folder) == []


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The checkers themselves: an upward import, an import across a floor and a loop are found."""
    package = tmp_path / "reactkd"
    (package / "images").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "images/__init__.py").write_text("")
    (package / "images/readers.py").write_text("from reactkd.cli.main import main\nimport slicer\n")
    (package / "preprocessing.py").write_text("def f():\n    from reactkd import ldct\n")
    (package / "ldct.py").write_text("")
    (package / "errors.py").write_text("from .atomic import x\n")
    (package / "atomic.py").write_text("from reactkd.errors import y\n")
    problems = upward_imports(sorted(package.rglob("*.py")), tmp_path)
    assert any("readers.py:1" in p and "higher floor" in p for p in problems)
    assert any("readers.py:2 imports slicer" in p for p in problems)
    assert any("preprocessing.py:2" in p and "own floor" in p for p in problems)
    assert import_cycles(sorted(package.rglob("*.py")), tmp_path) == [["reactkd.atomic", "reactkd.errors"]]
