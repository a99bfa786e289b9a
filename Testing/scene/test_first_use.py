"""First-use installation in Slicer (REACTKDLib.first_use) with Slicer's dialogs, pip_install and the
PyTorch extension replaced by recorders: torch is asked from the extension with the MONAI-derived version,
nothing is installed without a yes, a missing PyTorch extension gets its one-line explanation."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import slicer

from reactkd.dependencies import TORCH_REQUIREMENT, InstallPlan
from reactkd.errors import ReactKDError
from REACTKDLib import first_use


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    answers = {"confirm": True}
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kw: calls.append(("confirm", text)) or answers["confirm"], raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: calls.append(("error", text)), raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda lines: calls.append(("pip", list(lines))), raising=False)
    monkeypatch.setattr(slicer.util, "restart", lambda: calls.append(("restart",)), raising=False)

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            calls.append(("installTorch", askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.9.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    return calls, answers, monkeypatch


def plan(monkeypatch, torch, packages):
    monkeypatch.setattr(first_use, "install_plan", lambda kind: InstallPlan(kind, torch, packages))


def test_missing_torch_comes_from_the_pytorch_extension_with_the_monai_version(recorded, monkeypatch):
    calls, _, patch = recorded
    plan(patch, "missing", ["reactkd-surely-absent-package>=0.9.6"])
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # a fresh Slicer has not loaded torch
    assert first_use.ensure_dependencies("training") is True
    assert calls[0] == ("installTorch", True, TORCH_REQUIREMENT)
    assert calls[1][0] == "confirm" and "reactkd-surely-absent-package>=0.9.6" in calls[1][1]
    assert calls[2] == ("pip", ["reactkd-surely-absent-package>=0.9.6"])


def test_declined_installs_nothing(recorded):
    calls, answers, patch = recorded
    answers["confirm"] = False
    plan(patch, None, ["monai==1.6.1"])
    assert first_use.ensure_dependencies() is False
    assert [c[0] for c in calls] == ["confirm"]


def test_an_old_loaded_torch_is_updated_then_slicer_restarts(recorded, monkeypatch):
    calls, _, patch = recorded
    plan(patch, "too old: 2.2.1", [])
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.2.1"))
    assert first_use.ensure_dependencies() is False  # usable only after the restart
    kinds = [c[0] for c in calls]
    assert kinds == ["confirm", "installTorch", "confirm", "restart"]
    assert "2.2.1" in calls[0][1]
    assert calls[1] == ("installTorch", False, TORCH_REQUIREMENT)  # asked once: the extension does not ask again


def test_a_failing_pip_is_one_reactkd_error_for_the_dialog(recorded, monkeypatch):
    """Offline, slicer.util.pip_install raises CalledProcessError: the widget shows ReactKDErrors in a dialog."""
    calls, _, patch = recorded

    def offline(lines):
        raise subprocess.CalledProcessError(1, ["pip", "install", *lines])

    monkeypatch.setattr(slicer.util, "pip_install", offline, raising=False)
    plan(patch, None, ["einops>=0.7", "reactkd-surely-absent-package>=3"])
    with pytest.raises(ReactKDError, match="pip exit code 1") as caught:
        first_use.ensure_dependencies()
    assert "reactkd-surely-absent-package>=3" in str(caught.value) and "\n" not in str(caught.value)


def test_without_the_pytorch_extension_the_user_is_told_how_to_get_it(recorded, monkeypatch):
    calls, _, patch = recorded
    plan(patch, "missing", [])
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import raises ModuleNotFoundError
    assert first_use.ensure_dependencies() is False
    assert calls == [("error", first_use.NO_PYTORCH_EXTENSION)]


def test_complete_plan_asks_nothing(recorded):
    calls, _, patch = recorded
    plan(patch, None, [])
    assert first_use.ensure_dependencies() is True and calls == []
