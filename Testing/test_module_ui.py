"""Static checks of the REACTKD GUI module, which only runs inside Slicer: the widget names and parameter
bindings (REACTKDLib/widget.py, REACTKDLib/parameters.py) against Resources/UI/REACTKD.ui, the Qt signals the
widget connects, the logic methods it calls, the thin module file REACTKD.py, and their imports."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "REACTKD"
MODULE_FILE = MODULE_DIR / "REACTKD.py"
WIDGET_FILE = MODULE_DIR / "REACTKDLib" / "widget.py"
PARAMETERS_FILE = MODULE_DIR / "REACTKDLib" / "parameters.py"
#: The module file: module description and Qt wiring only (SlicerNNUNet's convention).
MAX_MODULE_LINES = 200
UI_FILE = MODULE_DIR / "Resources" / "UI" / "REACTKD.ui"

#: Imports allowed at the top of REACTKD.py, the widget and the parameter node: what Slicer has loaded anyway
#: and the module's own Slicer-side files. Heavy packages (torch, monai, SimpleITK, numpy) and the reactkd
#: package are imported inside functions, when first needed.
ALLOWED_TOP_LEVEL = {"logging", "typing", "REACTKDLib.logic", "REACTKDLib.self_test", "REACTKDLib.widget",
                     "REACTKDLib.parameters", ".logic", ".parameters", "qt", "ctk", "vtk", "slicer", "slicer.i18n",
                     "slicer.util", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule"}
#: The Qt-free scene code the widget must reach only through REACTKDLogic.
SCENE_MODULES = ("reactkd.scene", "REACTKDLib.scene_inputs", "REACTKDLib.result_nodes", "REACTKDLib.totalsegmentator",
                 "REACTKDLib.sample_data", "REACTKDLib.first_use", ".scene_inputs", ".result_nodes",
                 ".totalsegmentator", ".sample_data", ".first_use")
#: Signals (Qt signatures) of the widget classes the module connects to.
SIGNALS = {
    "QPushButton": {"clicked(bool)", "clicked()", "toggled(bool)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)"},
    "qMRMLSegmentSelectorWidget": {"currentSegmentChanged(QString)", "currentNodeChanged(vtkMRMLNode*)"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)"},
    "QCheckBox": {"toggled(bool)", "stateChanged(int)"},
}


@pytest.fixture(scope="module")
def module_ast() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def widget_ast() -> ast.Module:
    return ast.parse(WIDGET_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def parameters_ast() -> ast.Module:
    return ast.parse(PARAMETERS_FILE.read_text(encoding="utf-8"))


def imported_modules(tree: ast.Module, top_level_only: bool) -> set[str]:
    """Modules imported by `tree` (relative ones with their leading dots)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def ui_attribute_uses(tree: ast.Module) -> list[ast.Attribute]:
    """Every `self.ui.<name>` expression."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"]


def parameter_class(tree: ast.Module) -> ast.ClassDef:
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)
               and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)]
    assert len(classes) == 1, "REACTKDLib/parameters.py needs exactly one @parameterNodeWrapper class"
    return classes[0]


def parameter_annotations(tree: ast.Module) -> dict[str, str]:
    return {node.target.id: ast.unparse(node.annotation) for node in parameter_class(tree).body
            if isinstance(node, ast.AnnAssign)}


def bound_widgets(ui_widgets) -> dict[str, tuple[str, str]]:
    """Parameter name -> (widget class, widget name) for widgets with a SlicerParameterName property."""
    bound = {}
    for name, widget in ui_widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
                assert parameter not in bound, f"{parameter} is bound to two widgets"
                bound[parameter] = (widget.get("class"), name)
    return bound


def test_every_ui_widget_the_code_uses_exists(widget_ast, ui_widgets):
    used = {node.attr for node in ui_attribute_uses(widget_ast)}
    assert used, "REACTKDLib/widget.py should use its .ui widgets through self.ui"
    assert sorted(used - set(ui_widgets)) == []


def test_every_bound_parameter_exists_and_fits_its_widget(parameters_ast, ui_widgets):
    annotations = parameter_annotations(parameters_ast)
    bound = bound_widgets(ui_widgets)
    assert sorted(set(bound) - set(annotations)) == []
    # What Slicer's GUI connectors need, else connectGui raises at run time.
    for parameter, (widget_class, widget_name) in bound.items():
        annotation = annotations[parameter]
        if widget_class == "qMRMLNodeComboBox":
            assert annotation.startswith("vtkMRML"), (parameter, annotation)
        elif widget_class == "QComboBox":
            assert "Choice(" in annotation, f"{widget_name}: a combo box needs Choice([...]) on {parameter}"
        elif widget_class == "ctkSliderWidget":
            assert annotation.startswith("Annotated[float") and "WithinRange(" in annotation, parameter
        elif widget_class == "QCheckBox":
            assert annotation == "bool", parameter
        else:
            pytest.fail(f"{widget_name}: no parameter connector for {widget_class}")


def test_parameters_the_brief_asks_for_are_declared(parameters_ast):
    expected = {"ctVolume", "petFdgVolume", "petActVolume", "segmentation", "liverSegmentId", "tumourSegmentId",
                "labelMapVolume", "modelName", "device", "attentionKind", "opacity", "showGraph"}
    assert expected <= set(parameter_annotations(parameters_ast))


def test_attention_choices_match_the_scene_logic(parameters_ast, monkeypatch):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    from REACTKDLib.result_nodes import ATTENTION_KINDS

    annotation = ast.parse(parameter_annotations(parameters_ast)["attentionKind"], mode="eval").body
    choice = next(node for node in ast.walk(annotation) if isinstance(node, ast.Call) and node.func.id == "Choice")
    assert ast.literal_eval(choice.args[0]) == list(ATTENTION_KINDS)


def test_mrml_widgets_receive_the_scene(ui_widgets):
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget").get("name")
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("sender") == top and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, widget in ui_widgets.items() if widget.get("class").startswith("qMRML") and name != top}
    assert mrml and sorted(mrml - receivers) == []
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in ui_widgets.values() if not w.get("class").startswith("Q")}
    assert sorted(custom - declared) == []


def test_connected_signals_exist_on_their_widgets(widget_ast, ui_widgets):
    calls = [node for node in ast.walk(widget_ast) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
             and node.func.value in ui_attribute_uses(widget_ast) and node.args
             and isinstance(node.args[0], ast.Constant)]
    assert len(calls) >= 10
    for call in calls:
        widget_class = ui_widgets[call.func.value.attr].get("class")
        assert call.args[0].value in SIGNALS.get(widget_class, set()), (call.func.value.attr, call.args[0].value)


@pytest.mark.parametrize("path", [MODULE_FILE, WIDGET_FILE, PARAMETERS_FILE], ids=lambda p: p.name)
def test_no_heavy_imports_at_module_level(path):
    top_level = imported_modules(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True)
    assert sorted(top_level - ALLOWED_TOP_LEVEL) == []


def test_module_file_is_a_thin_shell(module_ast):
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES
    classes = [node.name for node in module_ast.body if isinstance(node, ast.ClassDef)]
    assert classes == ["REACTKD"]  # widget, logic, parameter node and test live in REACTKDLib
    imported = {alias.asname or alias.name for node in module_ast.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert {"REACTKDWidget", "REACTKDLogic", "REACTKDTest", "REACTKDParameterNode"} <= imported


def test_widget_reaches_scene_code_only_through_the_logic(widget_ast):
    imported = imported_modules(widget_ast, top_level_only=False)
    assert sorted(m for m in imported if m.startswith(SCENE_MODULES)) == []
    assert imported & {".logic", "REACTKDLib.logic"}


def lib_class(name: str, file: str) -> ast.ClassDef:
    """A class the module file imports from its REACTKDLib package."""
    tree = ast.parse((MODULE_DIR / "REACTKDLib" / file).read_text(encoding="utf-8"))
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def test_widget_calls_only_existing_logic_methods(widget_ast):
    logic = lib_class("REACTKDLogic", "logic.py")
    members = {node.name for node in logic.body if isinstance(node, ast.FunctionDef)}
    members |= {target.attr for node in ast.walk(logic) if isinstance(node, ast.Assign) for target in node.targets
                if isinstance(target, ast.Attribute)}
    used = {node.attr for node in ast.walk(widget_ast) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "logic"}
    used |= {node.attr for node in ast.walk(widget_ast) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "REACTKDLogic"}  # static methods
    assert used and sorted(used - members) == []


def test_slicer_test_runs_every_test_method():
    test_class = lib_class("REACTKDTest", "self_test.py")
    methods = {node.name for node in test_class.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    run_test = next(node for node in test_class.body if isinstance(node, ast.FunctionDef) and node.name == "runTest")
    called = {node.attr for node in ast.walk(run_test) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name) and node.value.id == "self"}
    assert methods and sorted(methods - called) == []


def widget_method(widget_ast, name: str) -> ast.FunctionDef:
    widget = next(node for node in widget_ast.body if isinstance(node, ast.ClassDef) and node.name == "REACTKDWidget")
    return next(node for node in widget.body if isinstance(node, ast.FunctionDef) and node.name == name)


def calls_in(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == name]


def reported_calls(method: ast.FunctionDef) -> set[str]:
    """Method names called inside a lambda handed to self._reportErrors (shown in a dialog when they raise)."""
    return {call.func.attr for report in calls_in(method, "_reportErrors") for arg in report.args
            if isinstance(arg, ast.Lambda) for call in ast.walk(arg.body)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)}


def test_what_can_fail_on_classify_is_reported_in_a_dialog(widget_ast):
    """An install failure (pip offline) and "already running" raise: both must reach _reportErrors."""
    assert "ensureDependencies" in reported_calls(widget_method(widget_ast, "ensureDependencies"))
    assert "startClassification" in reported_calls(widget_method(widget_ast, "onClassify"))


def test_result_rows_are_removed_with_their_rows(widget_ast):
    """QFormLayout.takeAt leaves an empty row behind per Classify; removeRow removes the row."""
    summary = widget_method(widget_ast, "showResultSummary")
    assert calls_in(summary, "removeRow") and not calls_in(summary, "takeAt")


def assigned(method: ast.FunctionDef, value) -> set[str]:
    """Attributes `method` sets to the constant `value` (chained assignments included)."""
    return {target.attr for node in ast.walk(method) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and node.value.value is value
            for target in node.targets if isinstance(target, ast.Attribute)}


def test_totalsegmentator_cannot_be_reentered_nor_classify_started_meanwhile(widget_ast):
    """TotalSegmentator runs on the main thread while its log reader pumps events: the flag is set for the run
    (cleared in a finally), disables both buttons, and both handlers return while it is set."""
    run = widget_method(widget_ast, "onTotalSegmentator")
    finals = [node for node in ast.walk(run) if isinstance(node, ast.Try) and node.finalbody]
    assert "_segmenting" in assigned(run, True)
    assert any("_segmenting" in assigned(ast.Module(body=node.finalbody, type_ignores=[]), False) for node in finals)
    for name in ("onTotalSegmentator", "onClassify", "_updateButtons"):
        method = widget_method(widget_ast, name)
        assert any(isinstance(node, ast.Attribute) and node.attr == "_segmenting" for node in ast.walk(method)), name
    buttons = widget_method(widget_ast, "_updateButtons")
    assert any(isinstance(node, ast.Attribute) and node.attr == "totalSegmentatorButton" for node in ast.walk(buttons))


def test_closing_the_scene_forgets_its_nodes(widget_ast):
    forgotten = assigned(widget_method(widget_ast, "onSceneStartClose"), None)
    assert {"_lastSegmentation", "_lastLabelMap", "_jobTarget"} <= forgotten
