"""REACTKDTrainingTest: the REACTKDTraining module's self-test inside Slicer (Reload and Test, or ctest)."""

import os
import sys
import tempfile
import textwrap
import time

from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .logic import REACTKDTrainingLogic


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
        from .runner import TrainingRunner, slicer_python_executable

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
