"""REACTKDTrainingLogic: train and evaluate REACT-KD models from Slicer in a child process.

The work is REACTKDTrainingLib.runner's (Qt-free, tested outside Slicer); this class adapts it to Slicer:
Slicer's Python for the child, progress callbacks on the main thread, a responsive GUI while waiting. Qt and
slicer are imported only when a run is followed, so nothing heavy loads at Slicer start-up.
"""

from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic


class REACTKDTrainingLogic(ScriptedLoadableModuleLogic):
    """Train / evaluate in a child process; see REACTKDTrainingLib.runner.TrainingRunner.

    ``wait=True`` keeps Slicer responsive (processes GUI events while waiting); with ``wait=False`` a
    timer delivers progress on the main thread and the returned handle can be cancelled:
    ``handle.cancel()``. Callbacks always run on Slicer's main thread.
    """

    def __init__(self, runner=None, catalog=None):
        """Args:
            runner: a TrainingRunner (default: Slicer's Python, callbacks on the main thread); a test's runner
                brings its own child and skips the dependency check.
            catalog: the model catalogue trained models are registered in (default: the user's).
        """
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
        # REACTKDLib: the REACTKD module's folder, on sys.path in Slicer (its first-use installer serves both).
        from REACTKDLib.first_use import ensure_dependencies

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
        """Any ``reactkd`` command, e.g. ``logic.run(["synth", "--out", folder, "--world", "null"], print)``;
        `json_progress=False` for a command without ``--progress json`` (simulate-ldct, seal)."""
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
