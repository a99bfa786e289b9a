"""First use in Slicer: install what Classify (or training) needs, after asking, with Slicer's own tools.

The decisions (what is missing, in which order to ask and install) are `reactkd.dependencies`'; this file
only plugs in Slicer's dialogs, ``slicer.util.pip_install`` and the PyTorch extension's ``installTorch``
(asked for the torch version the pinned MONAI needs, so pip never replaces the extension's CUDA build).
"""

from __future__ import annotations

import sys

import slicer

from reactkd.dependencies import install_missing, install_plan

TITLE = "REACT-KD"
NO_PYTORCH_EXTENSION = ("REACT-KD needs PyTorch: install the PyTorch extension from the Extensions Manager, "
                        "restart Slicer and try again.")


def _confirm(text: str) -> bool:
    return bool(slicer.util.confirmOkCancelDisplay(text, windowTitle=TITLE))


def _restart(names: list[str]) -> None:
    if _confirm(f"Updated packages ({', '.join(names)}) were already loaded; they take effect after a restart. "
                "Restart Slicer now?"):
        slicer.util.restart()


def _install_torch(requirement: str, problem: str) -> bool:
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        slicer.util.errorDisplay(NO_PYTORCH_EXTENSION, windowTitle=TITLE)
        return False
    loaded = "torch" in sys.modules
    # One question: ours for an upgrade (it says why), the extension's own for a fresh install.
    asked = problem != "missing"
    if asked and not _confirm(f"REACT-KD needs PyTorch {requirement}; this Slicer has {problem}. "
                              "Update it with the PyTorch extension?"):
        return False
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=not asked,
                                                     torchVersionRequirement=requirement) is None:
        slicer.util.errorDisplay("REACT-KD cannot run without PyTorch.", windowTitle=TITLE)
        return False
    if loaded:  # the old torch stays in this process until Slicer restarts
        _restart(["torch"])
        return False
    return True


def ensure_dependencies(kind: str = "classify") -> bool:
    """True when everything `kind` needs is importable, installing what is missing after asking; False when
    the user declined, an install failed or Slicer must restart first.

    Args:
        kind: "classify" (the REACTKD module) or "training" (REACTKDTraining).
    """
    plan = install_plan(kind)
    return install_missing(plan, _confirm, lambda requirement: _install_torch(requirement, plan.torch),
                           slicer.util.pip_install, _restart)
