"""REACTKDLogic: the REACTKD module's non-GUI entry points (also usable from Slicer's Python console).

Scene work is `reactkd.scene.module_logic`'s, classification runs in the persistent inference process
(`reactkd.inference.client`), batch grading in a `reactkd classify --manifest` child. No Qt here.
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic


class REACTKDLogic(ScriptedLoadableModuleLogic):
    """Non-GUI entry points (usable from the Python console); the work is done by the ``reactkd`` package.

    Loaded classifiers stay cached per model folder and device between classifications."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._process = None
        self.lastResult = None
        self.lastNodes = None

    def getParameterNode(self):
        from REACTKD import REACTKDParameterNode  # the module file defines it (parameter bindings of the .ui)

        return REACTKDParameterNode(super().getParameterNode())

    def modelCatalog(self):
        """The catalogue of shipped and user-registered model packages (no heavy imports)."""
        from reactkd.package.catalog import ModelCatalog

        return ModelCatalog()

    def inferenceProcess(self):
        """The persistent ``PythonSlicer -m reactkd serve`` child (started on the first request)."""
        if self._process is None:
            from reactkd.inference.client import InferenceProcess

            self._process = InferenceProcess()
        return self._process

    def loadedDevice(self, modelDir, device):
        """Device the warm inference process runs (model, device) on, or None if not loaded yet."""
        if self._process is None:
            return None
        return self._process.loaded.get((str(modelDir), device))

    def forgetModel(self, modelDir):
        """After a model was removed: a fresh process next time (the warm one may hold it)."""
        if self._process is not None and any(key[0] == str(modelDir) for key in self._process.loaded):
            self._process.shutdown()

    def inputsFromParameters(self, p):
        from reactkd.scene.module_logic import inputs_from_nodes

        return inputs_from_nodes(p.ctVolume, p.segmentation, p.liverSegmentId or None, p.tumourSegmentId or None,
                                 p.labelMapVolume, p.petFdgVolume, p.petActVolume)

    def startClassification(self, modelDir, device, inputs):
        """An InferenceRequest running in the inference process; look at ``done``/``stage``/``fraction``."""
        return self.inferenceProcess().submit(inputs, modelDir, device)

    def cancelClassification(self):
        if self._process is not None:
            self._process.cancel()

    def shutdown(self):
        if self._process is not None:
            self._process.shutdown()
            self._process = None

    def classify(self, modelDir, device, inputs, timeout=None):
        """Blocking classification (for scripts and tests), in the same inference process."""
        return self.inferenceProcess().classify(inputs, modelDir, device, timeout)

    def classifyAll(self, source, outDir, modelDir=None, device="auto", progress=None, wait=True):
        """Grade every case of a manifest CSV, or of a folder of case folders (case/ct.nii.gz, case/mask.nii.gz,
        optional pet_fdg, pet_act), into outDir/results.csv and outDir/cases/<case>/, in a child process.
        `progress` gets one event per case on this thread. With ``wait=False`` the RunHandle is returned at once:
        call its ``dispatch()`` to deliver events, ``cancel()`` to stop; a rerun resumes."""
        from pathlib import Path

        from reactkd.cohort.manifest import manifest_from_folder
        from reactkd.inference.batch_client import start_batch

        manifest = Path(source)
        if manifest.is_dir():
            manifest = manifest_from_folder(manifest, Path(outDir) / "manifest.csv")
        handle = start_batch(manifest, outDir, modelDir, device, progress)
        if wait:
            handle.wait(poll=slicer.app.processEvents)
        return handle

    def showResult(self, ctNode, result, segmentationNode=None, attentionKind="CBAM", opacity=0.5, showGraph=True):
        """Show `result` in the scene; the previous result is replaced only once this one is in place."""
        from reactkd.scene.module_logic import apply_result, remove_result

        nodes = apply_result(slicer.mrmlScene, ctNode, result, segmentationNode, attentionKind, opacity, showGraph)
        remove_result(slicer.mrmlScene, self.lastNodes)
        self.lastResult, self.lastNodes = result, nodes
        return nodes

    def forgetResult(self):
        self.lastResult = self.lastNodes = None

    def updateDisplay(self, p):
        """Apply heat-map kind, opacity and graph visibility to the shown result."""
        if self.lastNodes is None or not self.lastNodes.attention:
            return
        from reactkd.scene.module_logic import set_attention_display, set_graph_visible

        set_attention_display(slicer.mrmlScene, self.lastNodes, p.attentionKind, p.opacity)
        set_graph_visible(self.lastNodes, p.showGraph)
