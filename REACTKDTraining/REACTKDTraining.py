"""REACTKDTraining: headless Slicer module that trains and evaluates REACT-KD models in a child process.

All work is done by REACTKDTrainingLib.runner (Qt-free, tested outside Slicer); this file only adapts it
to Slicer: Slicer's Python for the child, progress callbacks on the main thread, a responsive GUI while
waiting. Nothing heavy is imported at Slicer start-up.
"""

import os
import sys
import tempfile
import textwrap
import time

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

USAGE = """\
from REACTKDTraining import REACTKDTrainingLogic
logic = REACTKDTrainingLogic()
handle = logic.train("student", "/data/cohort/manifest.csv", "/data/models/student",
                     progress=print, wait=True)
print(handle.returncode, handle.error_message, handle.registered)
logic.evaluate("/data/cohort/manifest.csv", "/data/models/student", "/data/eval",
               doses=[1, 0.5, 0.25], modalities=["ct", "all"], progress=print)
"""


class REACTKDTraining(ScriptedLoadableModule):
    """Module description. Hidden from the module menu: it is an API for the Python console and for the
    REACTKD module; ``slicer.modules.reactkdtraining`` still exists."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("REACT-KD Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["REACT-KD developers (REACT-KD open-source project)"]
        self.parent.hidden = True
        self.parent.helpText = _(
            "Train REACT-KD teachers and students and evaluate models from Slicer's Python console. "
            "Each run is a <code>reactkd train</code> or <code>reactkd evaluate</code> child process using "
            "Slicer's Python, with progress events (epoch, step, loss, metrics, ETA) passed to a callback "
            "and a cancel that stops the whole process tree. A trained model is registered in the model "
            "catalogue, so the REACTKD module offers it.<br>Example:<pre>") + USAGE + "</pre>"
        self.parent.acknowledgementText = _(
            "REACT-KD: region-aware cross-modal topological knowledge distillation for HCC grading. "
            "Research software, not for clinical use.")


class REACTKDTrainingWidget(ScriptedLoadableModuleWidget):
    """Only a pointer to the console API (the module is hidden; the widget exists for reload/testing)."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        label = qt.QLabel(_("Use this module from the Python console:") + "<pre>" + USAGE + "</pre>")
        label.wordWrap = True
        label.textInteractionFlags = qt.Qt.TextSelectableByMouse
        self.layout.addWidget(label)
        self.layout.addStretch(1)


class REACTKDTrainingLogic(ScriptedLoadableModuleLogic):
    """Train / evaluate in a child process; see REACTKDTrainingLib.runner.TrainingRunner.

    ``wait=True`` keeps Slicer responsive (processes GUI events while waiting); with ``wait=False`` a
    timer delivers progress on the main thread and the returned handle can be cancelled:
    ``handle.cancel()``. Callbacks always run on Slicer's main thread.
    """

    def __init__(self, runner=None, catalog=None):
        ScriptedLoadableModuleLogic.__init__(self)
        from REACTKDTrainingLib.runner import TrainingRunner, slicer_python_executable

        self.runner = runner or TrainingRunner(python=slicer_python_executable(), catalog=catalog,
                                               callbacks_in_thread=False)
        #: Install what training needs (after asking) before the first run; a test's runner brings its own child.
        self.checkDependencies = runner is None
        self._timers = {}

    def ensureDependencies(self):
        """Raise ReactKDError unless PyTorch and the training packages are installed (asking to install them)."""
        if not self.checkDependencies:
            return
        from reactkd.scene.first_use import ensure_dependencies

        if not ensure_dependencies("training"):
            from reactkd.errors import ReactKDError

            raise ReactKDError("REACT-KD training needs packages that are not installed; nothing was started")
        self.checkDependencies = False

    def train(self, stage, manifest, out, config=None, progress=None, wait=True, register=True,
              extra_args=(), catalog=None):
        """Run ``reactkd train --stage stage --manifest manifest --out out [--config config]``; on success
        register ``out`` in the model catalogue. Returns a RunHandle."""
        self.ensureDependencies()
        handle = self.runner.train(stage, manifest, out, config=config, extra_args=extra_args,
                                   progress=progress, wait=False, register=register, catalog=catalog)
        return self._follow(handle, wait)

    def evaluate(self, manifest, model, out, doses=None, modalities=None, progress=None, wait=True,
                 extra_args=()):
        """Run ``reactkd evaluate``; the report lands in ``out``. Returns a RunHandle."""
        self.ensureDependencies()
        handle = self.runner.evaluate(manifest, model, out, doses=doses, modalities=modalities,
                                      extra_args=extra_args, progress=progress, wait=False)
        return self._follow(handle, wait)

    def run(self, args, progress=None, wait=True, json_progress=True):
        """Any ``reactkd`` command, e.g. ``logic.run(["synth", "--out", folder], print,
        json_progress=False)`` (only train and evaluate take ``--progress json``)."""
        self.ensureDependencies()
        return self._follow(self.runner.run(args, progress, wait=False, json_progress=json_progress), wait)

    def _follow(self, handle, wait):
        import slicer

        if wait:
            handle.wait(poll=slicer.app.processEvents)
            return handle
        import qt

        timer = qt.QTimer()
        timer.setInterval(100)

        def deliver():
            handle.dispatch()
            if handle.done:
                handle.dispatch()
                timer.stop()
                self._timers.pop(id(handle), None)

        timer.connect("timeout()", deliver)
        self._timers[id(handle)] = timer  # keep the timer alive as long as the run
        timer.start()
        return handle


class REACTKDTrainingTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: the child is Slicer's own Python running a fake ``reactkd``, so no torch or
    training data is needed."""

    FAKE = textwrap.dedent("""
        import json, sys, time
        import reactkd  # the child must find the core package shipped with the extension
        print(json.dumps({"event": "start", "reactkd": reactkd.__file__}), flush=True)
        for step in range(3):
            print(json.dumps({"event": "step", "epoch": 0, "step": step, "steps": 3,
                              "loss": {"total": 1.0}, "eta_s": 1}), flush=True)
        if "--hang" in sys.argv:
            time.sleep(120)
        print(json.dumps({"event": "done", "model_dir": ""}), flush=True)
    """)

    def setUp(self):
        import slicer

        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_progress_from_slicer_python()
        self.test_cancel()

    def _logic(self, folder):
        from REACTKDTrainingLib.runner import TrainingRunner, slicer_python_executable

        script = os.path.join(folder, "fake_reactkd.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(self.FAKE)
        runner = TrainingRunner(command=[slicer_python_executable(), script], callbacks_in_thread=False)
        return REACTKDTrainingLogic(runner=runner)

    def test_progress_from_slicer_python(self):
        self.delayDisplay("Fake reactkd child with Slicer's Python")
        events = []
        with tempfile.TemporaryDirectory() as folder:
            handle = self._logic(folder).run(["train"], progress=events.append, wait=True)
        self.assertEqual(handle.returncode, 0, handle.error_message)
        self.assertEqual([e["event"] for e in events], ["start", "step", "step", "step", "done"])
        self.assertTrue(events[0]["reactkd"].endswith("__init__.py"))

    def test_cancel(self):
        import slicer

        self.delayDisplay("Cancel a running child")
        events = []
        with tempfile.TemporaryDirectory() as folder:
            handle = self._logic(folder).run(["train", "--hang"], progress=events.append, wait=False)
            deadline = time.monotonic() + 60
            while len(events) < 4 and time.monotonic() < deadline:
                slicer.app.processEvents()
                time.sleep(0.05)
            self.assertEqual(len(events), 4, f"progress not delivered: {events} {sys.executable}")
            handle.cancel(grace_s=2.0)
            self.assertTrue(handle.cancelled)
            self.assertNotEqual(handle.wait(timeout=30), 0)
