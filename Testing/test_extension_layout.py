"""Static checks of the Slicer extension: CMake source lists, metadata, catalog entry, module files that
stay light at Slicer start-up, icons, first-use requirements."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("update_cmake_sources", REPO / "Resources/update_cmake_sources.py")
sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sources)

#: Packages that are not in Slicer's Python until installed, or slow to import: never at module top level.
HEAVY = {"torch", "torchvision", "monai", "ot", "einops", "safetensors", "sklearn", "matplotlib", "yaml", "tqdm"}
MODULE_FILES = [REPO / "REACTKD/REACTKD.py", REPO / "REACTKDTraining/REACTKDTraining.py"]
#: Imported by the module files at start-up or widget setup.
LIGHT_FILES = MODULE_FILES + sorted((REPO / "REACTKDTraining/REACTKDTrainingLib").glob("*.py")) + sorted(
    (REPO / "REACTKD/REACTKDLib").glob("*.py")) + [
    REPO / "REACTKD/reactkd" / name for name in ("__init__.py", "errors.py", "atomic.py", "package/catalog.py")]
#: Fields allowed by slicer-extension-catalog-entry-schema-v1.0.1.json (additionalProperties: false).
CATALOG_FIELDS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                  "build_subdirectory", "enabled", "tier"}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def extension_variables() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    found = re.findall(r'set\((EXTENSION_\w+)\s+(?:"([^"]*)"|([^)\s]*))\s*\)', text)
    return {name: quoted or bare for name, quoted, bare in found}


def cmake_list(value: str) -> list[str]:
    items = [v for v in re.split(r"[;\s]+", value.strip()) if v]
    return [] if items == ["NA"] else items


# ----------------------------------------------------------------------------------------- CMake lists
def test_cmake_lists_are_up_to_date():
    problems = sources.stale_lists()
    assert not problems, "\n".join(problems) + "\nrun: python Resources/update_cmake_sources.py"


@pytest.mark.parametrize("module, package", [("REACTKD", "reactkd"), ("REACTKD", "REACTKDLib"),
                                             ("REACTKDTraining", "REACTKDTrainingLib")])
def test_every_package_py_is_listed_and_every_listed_file_exists(module, package):
    text = (REPO / module / "CMakeLists.txt").read_text()
    scripts, resources = sources.listed(text, "SCRIPTS"), sources.listed(text, "RESOURCES")
    on_disk = {p.relative_to(REPO / module).as_posix() for p in (REPO / module / package).rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(on_disk - set(scripts))
    assert not missing, f"{module}/CMakeLists.txt SCRIPTS lacks: {missing}"
    assert f"{module}.py" in scripts and f"Resources/Icons/{module}.png" in resources
    absent = [item for item in scripts + resources if not (REPO / module / item).is_file()]
    assert not absent, f"{module}/CMakeLists.txt lists missing files: {absent}"


def test_staleness_check_names_unlisted_and_vanished_files(tmp_path):
    module = tmp_path / "Mod"
    (module / "pkg/sub").mkdir(parents=True)
    (module / "Resources/Icons").mkdir(parents=True)
    for name in ("Mod.py", "pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py", "pkg/data.json",
                 "Resources/Icons/Mod.png", "pkg/.hidden.py", "notapackage/x.py"):
        (module / name).parent.mkdir(parents=True, exist_ok=True)
        (module / name).write_text("")
    (module / "pkg/__pycache__").mkdir()
    (module / "pkg/__pycache__/a.cpython-311.pyc").write_text("")
    template = "# BEGIN GENERATED SCRIPTS\n# END GENERATED SCRIPTS\n# BEGIN GENERATED RESOURCES\n# END GENERATED RESOURCES\n"
    (module / "CMakeLists.txt").write_text(sources.updated_text(template, sources.module_sources(module)))
    text = (module / "CMakeLists.txt").read_text()
    assert sources.listed(text, "SCRIPTS") == ["Mod.py", "pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py"]
    assert sources.listed(text, "RESOURCES") == ["Resources/Icons/Mod.png", "pkg/data.json"]
    assert sources.stale_lists(tmp_path, ("Mod",)) == []
    (module / "pkg/sub/new.py").write_text("")
    (module / "pkg/a.py").unlink()
    problems = "\n".join(sources.stale_lists(tmp_path, ("Mod",)))
    assert "lacks: pkg/sub/new.py" in problems and "do not exist or are not shipped: pkg/a.py" in problems


def test_cmake_configures_against_a_stub_slicer(tmp_path):
    """Configure the real CMakeLists.txt with stand-ins for Slicer's macros that check every listed file
    exists (as slicerMacroBuildScriptedModule does) and record what was registered."""
    if shutil.which("cmake") is None or not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("cmake or a C++ compiler (needed by project()) not installed")
    stub = tmp_path / "stub"
    stub.mkdir()
    record = tmp_path / "record.txt"
    (stub / "SlicerConfig.cmake").write_text(textwrap.dedent(f"""
        set(Slicer_USE_FILE "${{CMAKE_CURRENT_LIST_DIR}}/UseSlicer.cmake")
        set(Slicer_EXTENSION_GENERATE_CONFIG "${{CMAKE_CURRENT_LIST_DIR}}/Done.cmake")
        set(Slicer_EXTENSION_CPACK "${{CMAKE_CURRENT_LIST_DIR}}/Done.cmake")
        set(RECORD "{record.as_posix()}")
        """))
    (stub / "UseSlicer.cmake").write_text(textwrap.dedent("""
        macro(slicerMacroBuildScriptedModule)
          cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
          if(MY_UNPARSED_ARGUMENTS)
            message(FATAL_ERROR "unknown arguments: ${MY_UNPARSED_ARGUMENTS}")
          endif()
          foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
            if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${f}")
              message(FATAL_ERROR "nonexistent file ${f}")
            endif()
          endforeach()
          list(LENGTH MY_SCRIPTS n)
          file(APPEND "${RECORD}" "module ${MY_NAME} ${n} ${MY_WITH_GENERIC_TESTS}\\n")
        endmacro()
        macro(slicer_add_python_unittest)
          cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
          file(APPEND "${RECORD}" "unittest ${MY_SCRIPT}\\n")
        endmacro()
        """))
    (stub / "Done.cmake").write_text(
        'file(APPEND "${RECORD}" "extension ${PROJECT_NAME} depends=${EXTENSION_DEPENDS}\\n")\n')
    result = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(tmp_path / "build"), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=ON",
         "-DCMAKE_C_COMPILER_WORKS=1", "-DCMAKE_CXX_COMPILER_WORKS=1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = record.read_text().splitlines()
    n_scripts = len(sources.listed((REPO / "REACTKD/CMakeLists.txt").read_text(), "SCRIPTS"))
    assert f"module REACTKD {n_scripts} TRUE" in lines and "unittest REACTKD.py" in lines
    assert "unittest REACTKDTraining.py" in lines
    assert lines.count("extension REACTKD depends=PyTorch") == 2


# --------------------------------------------------------------------------------- extension metadata
def test_extension_metadata_is_complete():
    variables = extension_variables()
    for name in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert variables.get(f"EXTENSION_{name}", "").strip(), f"EXTENSION_{name} missing or empty"
    assert variables["EXTENSION_HOMEPAGE"].startswith("https://github.com/")


def test_files_the_extension_metadata_points_at_exist():
    """Icon and screenshot URLs (raw GitHub files of this repository), licence and readme."""
    variables = extension_variables()
    homepage = variables["EXTENSION_HOMEPAGE"]
    raw_prefix = homepage.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for url in [variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(raw_prefix), url
        assert (REPO / url[len(raw_prefix):]).is_file(), f"{url} has no file in the repository"
    for name in ("LICENSE", "README.md"):
        assert (REPO / name).is_file(), f"{name} missing (EXTENSION_LICENSE_FILE / EXTENSION_README_FILE)"
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()


def test_catalog_entry_follows_schema_and_matches_cmake():
    entry = json.loads((REPO / "REACTKD.json").read_text())
    variables = extension_variables()
    assert CATALOG_REQUIRED <= set(entry) and set(entry) <= CATALOG_FIELDS, set(entry) ^ CATALOG_FIELDS
    assert "slicer-extension-catalog-entry-schema-v1.0" in entry["$schema"]
    assert entry["build_dependencies"] == cmake_list(variables["EXTENSION_DEPENDS"]) == ["PyTorch"]
    assert entry["category"] == variables["EXTENSION_CATEGORY"]
    assert entry["scm_url"].removesuffix(".git") == variables["EXTENSION_HOMEPAGE"]
    assert entry.get("tier", 5) in (1, 3, 5) and entry.get("scm_type", "git") in ("git", "local")
    assert entry.get("build_subdirectory", ".") == "." and isinstance(entry.get("scm_revision", ""), str)


# ------------------------------------------------------------------------------ light module start-up
def heavy_top_level_imports(source: str) -> list[str]:
    """Heavy packages imported outside function bodies (and outside ``if TYPE_CHECKING:``)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found.extend(n for n in names if n.split(".")[0] in HEAVY)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def test_heavy_import_checker_sees_module_and_class_level_imports():
    source = textwrap.dedent("""
        import os
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import torch
        try:
            import monai.networks
        except ImportError:
            pass
        class A:
            from sklearn import metrics
            def f(self):
                import torch
        def g():
            import matplotlib.pyplot
    """)
    assert heavy_top_level_imports(source) == ["monai.networks", "sklearn"]


@pytest.mark.parametrize("path", LIGHT_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_start_up_files_import_nothing_heavy_at_top_level(path):
    assert heavy_top_level_imports(path.read_text()) == []


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_module_files_follow_the_scripted_module_shape(path):
    tree = ast.parse(path.read_text())
    name = path.stem
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    classes |= {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith(f"{name}Lib") for alias in node.names}  # e.g. REACTKDLib.logic
    assert {name, f"{name}Widget", f"{name}Logic", f"{name}Test"} <= classes
    runs_code = [ast.unparse(node)[:60] for node in tree.body if not isinstance(
        node, ast.Import | ast.ImportFrom | ast.ClassDef | ast.FunctionDef | ast.Assign | ast.Expr)
        or (isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant))]
    assert not runs_code, f"code executed at import time: {runs_code}"


def test_module_files_load_without_heavy_packages():
    """Execute both module files against stand-ins for Slicer's base classes in a fresh interpreter and
    check that nothing heavy got imported (what Slicer does at start-up)."""
    code = textwrap.dedent(f"""
        import importlib.abc, importlib.machinery, importlib.util, sys, types

        class Stub:  # any Slicer/Qt class, function or decorator: subclassable, callable, any attribute
            def __init__(self, *args, **kwargs):
                pass
            def __call__(self, *args, **kwargs):
                return args[0] if len(args) == 1 and isinstance(args[0], type) else Stub()
            def __getattr__(self, name):
                return Stub()

        class StubModule(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):
                    raise AttributeError(name)
                value = (lambda text, *a: text) if name in ("tr", "translate") else type(name, (Stub,), {{}})
                setattr(self, name, value)
                return value

        class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            ROOTS = ("qt", "ctk", "vtk", "slicer", "SampleData", "PyTorchUtils")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.ROOTS:
                    return importlib.machinery.ModuleSpec(name, self, is_package=True)
                return None
            def create_module(self, spec):
                return StubModule(spec.name)
            def exec_module(self, module):
                module.__path__ = []

        sys.meta_path.insert(0, StubFinder())
        sys.path[:0] = [{str(REPO / "REACTKD")!r}, {str(REPO / "REACTKDTraining")!r}]
        for path in {[str(p) for p in MODULE_FILES]!r}:
            spec = importlib.util.spec_from_file_location("m", path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        import reactkd.package.catalog, REACTKDTrainingLib.runner
        print(sorted(set({sorted(HEAVY)!r}) & {{m.split(".")[0] for m in sys.modules}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ icons, packages
ICONS = [REPO / "Resources/Icons/REACTKD.png", REPO / "REACTKD/Resources/Icons/REACTKD.png",
         REPO / "REACTKDTraining/Resources/Icons/REACTKDTraining.png"]


@pytest.mark.parametrize("path", ICONS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_icons_are_128_pixel_pngs(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        assert len(set(image.convert("RGB").getdata())) > 20  # drawn, not a blank square


def test_first_use_requirements_match_the_package_dependencies():
    """requirements-classify.txt + requirements-training.txt (installed into Slicer on first use) = pyproject
    dependencies, except torch (from the PyTorch extension) and what Slicer bundles; every Slicer version
    floor or pin also satisfies the pip package's."""
    from reactkd.dependencies import (
        CLASSIFY_REQUIREMENTS,
        SLICER_BUNDLED,
        TRAINING_REQUIREMENTS,
        parse_requirement_line,
        parse_requirements,
        satisfies,
    )

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = {r.name.lower(): r for r in map(parse_requirement_line, project["dependencies"])
                if r.name.lower() != "torch" and r.name.lower() not in SLICER_BUNDLED}
    slicer = {r.name.lower(): r for path in (CLASSIFY_REQUIREMENTS, TRAINING_REQUIREMENTS)
              for r in parse_requirements(path)}
    assert sorted(slicer) == sorted(expected)
    for name, requirement in slicer.items():
        version = requirement.clauses[0][1] if requirement.clauses else "0"
        assert satisfies(version, expected[name].clauses), f"{requirement.line} vs pyproject {expected[name].line}"


def test_modules_share_the_extension_category_and_name_contributors_with_affiliation():
    variables = extension_variables()
    people = re.compile(r"^[^(),]+ \([^()]+\)$")
    assert all(people.match(name.strip()) for name in variables["EXTENSION_CONTRIBUTORS"].split(",")), \
        "contributors read 'Name (Affiliation)', comma separated"
    for module in MODULE_FILES:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "translate"]
        categories = [c.args[1].value for c in calls if len(c.args) == 2 and c.args[0].value == "qSlicerAbstractCoreModule"]
        assert categories == [variables["EXTENSION_CATEGORY"]], module.name
        contributors = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                        and ast.unparse(node.targets[0]) == "self.parent.contributors"]
        assert contributors and all(people.match(item.value) for item in contributors[0].value.elts), module.name
