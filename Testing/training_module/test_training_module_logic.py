"""REACTKDTraining.py outside Slicer: the module file (with REACTKDTrainingLib.logic and .self_test, which it
imports) is loaded against small stand-ins for Slicer's ScriptedLoadableModule, slicer.app and qt (none of
which slicer-core provides), to check that its thin Logic delivers progress on the calling thread, keeps the
GUI polled, and picks Slicer's Python."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from reactkd.errors import ReactKDError
from reactkd.package.catalog import ModelCatalog
from REACTKDTrainingLib.runner import TrainingRunner, slicer_python_executable

MODULE_FILE = Path(__file__).resolve().parents[2] / "REACTKDTraining" / "REACTKDTraining.py"

FAKE_CHILD = textwrap.dedent("""
    import json, time
    print(json.dumps({"event": "start"}), flush=True)
    print(json.dumps({"event": "step", "epoch": 0, "step": 0, "steps": 1, "loss": {"total": 0.5}, "eta_s": 0}),
          flush=True)
    time.sleep(0.3)  # long enough for the waiting loop to poll the GUI a few times
    print(json.dumps({"event": "done", "model_dir": ""}), flush=True)
""")


class FakeTimer:
    instances: list[FakeTimer] = []

    def __init__(self):
        self.callback, self.running = None, False
        FakeTimer.instances.append(self)

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, callback):
        assert signal == "timeout()"
        self.callback = callback

    def start(self):
        self.running = True

    def stop(self):
        self.running = False


@pytest.fixture
def module(monkeypatch):
    """REACTKDTraining.py executed against stand-ins; returns (module namespace, processEvents counter)."""
    polls = []
    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    base.ScriptedLoadableModule = ScriptedLoadableModule
    base.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    base.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    base.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (), {})
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    slicer = types.ModuleType("slicer")
    slicer.app = types.SimpleNamespace(processEvents=lambda: polls.append(threading.get_ident()))
    slicer.i18n, slicer.ScriptedLoadableModule = i18n, base
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    FakeTimer.instances = []
    for name, stub in {"slicer": slicer, "slicer.i18n": i18n, "slicer.ScriptedLoadableModule": base,
                       "qt": qt}.items():
        monkeypatch.setitem(sys.modules, name, stub)
    for name in ("REACTKDTrainingLib.logic", "REACTKDTrainingLib.self_test"):  # fresh, against these stand-ins
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location("REACTKDTraining_under_test", MODULE_FILE)
    namespace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(namespace)
    return namespace, polls


@pytest.fixture
def fake_runner(tmp_path):
    script = tmp_path / "fake_reactkd.py"
    script.write_text(FAKE_CHILD)
    catalog = ModelCatalog(user_file=tmp_path / "models.json", shipped_file=tmp_path / "none.json")
    return TrainingRunner(command=[sys.executable, str(script)], callbacks_in_thread=False, catalog=catalog)


def test_module_is_hidden_and_documents_console_use(module):
    namespace, _ = module
    parent = types.SimpleNamespace()
    namespace.REACTKDTraining(parent)
    assert parent.hidden is True and parent.title == "REACT-KD Training"
    assert 'logic.train("student"' in parent.helpText and "progress=print" in parent.helpText


def test_default_logic_uses_slicer_python_and_main_thread_delivery(module):
    namespace, _ = module
    logic = namespace.REACTKDTrainingLogic()
    assert logic.runner.python == slicer_python_executable() and logic.runner.callbacks_in_thread is False


def test_waiting_train_polls_gui_and_calls_back_on_this_thread(module, fake_runner, tmp_path):
    namespace, polls = module
    seen = []
    handle = namespace.REACTKDTrainingLogic(runner=fake_runner).train(
        "student", "m.csv", tmp_path / "out", progress=lambda e: seen.append((e["event"], threading.get_ident())),
        register=False)
    assert handle.returncode == 0
    assert [event for event, _ in seen] == ["start", "step", "done"]
    assert {thread for _, thread in seen} == {threading.get_ident()} and len(polls) >= 3


def test_non_waiting_run_is_driven_by_a_main_thread_timer(module, fake_runner, tmp_path):
    namespace, polls = module
    seen = []
    logic = namespace.REACTKDTrainingLogic(runner=fake_runner)
    handle = logic.evaluate("m.csv", "model", tmp_path / "eval", progress=lambda e: seen.append(e["event"]),
                            wait=False)
    (timer,) = FakeTimer.instances
    assert timer.running and logic._timers and seen == []
    deadline = time.monotonic() + 30
    while timer.running and time.monotonic() < deadline:
        timer.callback()  # what Qt's event loop does every 100 ms
        time.sleep(0.02)
    assert handle.done and not timer.running and logic._timers == {}
    assert seen == ["start", "step", "done"] and polls == []


def test_default_logic_installs_training_packages_first_and_starts_nothing_without_them(module, monkeypatch, tmp_path):
    namespace, _ = module
    asked = []
    first_use = types.ModuleType("REACTKDLib.first_use")
    first_use.ensure_dependencies = lambda kind: asked.append(kind) or False
    monkeypatch.setitem(sys.modules, "REACTKDLib", types.ModuleType("REACTKDLib"))
    monkeypatch.setitem(sys.modules, "REACTKDLib.first_use", first_use)
    logic = namespace.REACTKDTrainingLogic()
    started = []
    monkeypatch.setattr(logic.runner, "run", lambda *args, **kwargs: started.append(args))
    with pytest.raises(ReactKDError, match="nothing was started"):
        logic.train("student", "m.csv", tmp_path / "out")
    assert asked == ["training"] and started == []
    first_use.ensure_dependencies = lambda kind: asked.append(kind) or True
    logic.run(["synth", "--out", str(tmp_path)], wait=False)
    assert started and asked == ["training", "training"] and logic.checkDependencies is False


def test_module_file_is_a_thin_shell_over_its_lib(module):
    namespace, _ = module
    assert namespace.REACTKDTrainingLogic.__module__ == "REACTKDTrainingLib.logic"
    assert namespace.REACTKDTrainingTest.__module__ == "REACTKDTrainingLib.self_test"
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) <= 200
