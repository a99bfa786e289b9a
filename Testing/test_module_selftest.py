"""REACTKD.py's in-Slicer self-test outside Slicer: the module file (with the REACTKDLib widget, parameter
node, logic and self-test it imports) is loaded against stand-ins for Slicer, qt and vtk, the scene-bound
steps are replaced by recorders, and the test is run both ways Slicer runs it: by unittest's loader as ctest's
``slicer.testing.runUnitTest`` does (each test method, never ``runTest``) and by a direct ``runTest()`` call as
Reload and Test does. Without torch (the extension build server) the classification is a skip with its reason
(a logged one in the GUI, never a failure) and the light steps still run; with everything installed it runs."""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import pytest

from reactkd import dependencies
from reactkd.dependencies import InstallPlan

MODULE_FILE = Path(__file__).resolve().parents[1] / "REACTKD" / "REACTKD.py"


@pytest.fixture
def module(monkeypatch):
    slicer = types.ModuleType("slicer")
    for name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.mrmlScene = types.SimpleNamespace(Clear=lambda: None)
    slicer.app = types.SimpleNamespace(connect=lambda *args: None, majorVersion=5, minorVersion=10)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.Choice = wrapper.WithinRange = lambda *args: None
    wrapper.parameterNodeWrapper = lambda cls: cls
    base = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleWidget"):
        setattr(base, name, type(name, (), {"__init__": lambda self, *args: None}))
    base.ScriptedLoadableModuleTest = unittest.TestCase
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {})
    stubs = {"slicer": slicer, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
             "slicer.ScriptedLoadableModule": base, "slicer.util": util, "qt": types.ModuleType("qt"),
             "vtk": types.ModuleType("vtk")}
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    monkeypatch.syspath_prepend(str(MODULE_FILE.parent))
    for name in ("REACTKDLib", "REACTKDLib.logic", "REACTKDLib.parameters", "REACTKDLib.self_test",
                 "REACTKDLib.widget"):  # fresh, against these stand-ins
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location("REACTKD_under_test", MODULE_FILE)
    namespace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(namespace)
    calls = []
    test_class = namespace.REACTKDTest
    # The light steps and the classification's body are recorders; the classification's own guard stays.
    for step in ("test_catalogue_lists_shipped_model", "test_sample_case_segments_found", "_classifySampleCase"):
        monkeypatch.setattr(test_class, step, lambda self, step=step: calls.append(step))
    monkeypatch.setattr(test_class, "delayDisplay", lambda self, text: None, raising=False)
    return namespace, calls


def run_as_ctest(namespace) -> unittest.TestResult:
    """As ctest's py_REACTKD: ``slicer.testing.runUnitTest`` loads the module's test methods with unittest's
    loader (``runTest`` is never called) and runs them."""
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(namespace.REACTKDTest).run(result)
    return result


def run_as_reload_and_test(namespace) -> None:
    """As Reload and Test in the GUI: ``ScriptedLoadableModule.runTest`` calls ``REACTKDTest().runTest()``
    directly; anything it raises (a SkipTest too) is a failure there."""
    namespace.REACTKDTest().runTest()


def without_torch(monkeypatch):
    monkeypatch.setattr(dependencies, "install_plan", lambda kind: InstallPlan(kind, "missing", ["monai==1.6.1"]))


def test_ctest_without_torch_skips_only_the_classification_with_its_reason(module, monkeypatch):
    namespace, calls = module
    without_torch(monkeypatch)
    result = run_as_ctest(namespace)
    assert result.testsRun == 3 and result.wasSuccessful() and not result.errors and not result.failures
    assert len(result.skipped) == 1 and "PyTorch" in result.skipped[0][1] and "monai==1.6.1" in result.skipped[0][1]
    assert sorted(calls) == ["test_catalogue_lists_shipped_model", "test_sample_case_segments_found"]


def test_reload_and_test_without_torch_logs_a_skip_instead_of_failing(module, monkeypatch, caplog):
    namespace, calls = module
    without_torch(monkeypatch)
    run_as_reload_and_test(namespace)  # raises nothing
    assert calls == ["test_catalogue_lists_shipped_model", "test_sample_case_segments_found"]
    assert any("skipped" in record.getMessage() and "monai==1.6.1" in record.getMessage() for record in caplog.records)


def test_with_everything_installed_the_classification_runs_both_ways(module, monkeypatch):
    namespace, calls = module
    monkeypatch.setattr(dependencies, "install_plan", lambda kind: InstallPlan(kind, None, []))
    result = run_as_ctest(namespace)
    assert result.wasSuccessful() and not result.skipped and "_classifySampleCase" in calls
    calls.clear()
    run_as_reload_and_test(namespace)
    assert calls[-1] == "_classifySampleCase"


def test_old_slicer_message_comes_from_the_module_logic(module, monkeypatch):
    namespace, _ = module
    sys.modules["slicer"].app.minorVersion = 8
    assert "5.10 or newer" in namespace.REACTKDLogic.unsupportedSlicer()
    sys.modules["slicer"].app.minorVersion = 10
    assert namespace.REACTKDLogic.unsupportedSlicer() is None or sys.version_info < (3, 10)
