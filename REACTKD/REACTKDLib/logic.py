"""REACTKDLogic: the REACTKD module's non-GUI entry points (also usable from Slicer's Python console).

The widget (REACTKDLib.widget) talks only to this class. Scene work is in REACTKDLib.scene_inputs,
REACTKDLib.result_nodes and REACTKDLib.totalsegmentator; classification runs in the persistent inference
process (`reactkd.inference.client`), batch grading in a `reactkd classify --manifest` child
(`reactkd.inference.batch_client`). No Qt here, and nothing that imports torch or monai.
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import REACTKDParameterNode


class REACTKDLogic(ScriptedLoadableModuleLogic):
    """Non-GUI entry points (usable from the Python console); the work is done by the ``reactkd`` package.

    Loaded classifiers stay cached per model folder and device between classifications."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._process = None
        self.lastResult = None
        self.lastNodes = None

    def getParameterNode(self):
        return REACTKDParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------------------- Slicer and first use
    @staticmethod
    def unsupportedSlicer():
        """A message when this Slicer is older than supported (5.10, Python 3.12), else None."""
        from reactkd.dependencies import unsupported_slicer

        return unsupported_slicer(slicer.app.majorVersion, slicer.app.minorVersion)

    @staticmethod
    def registerSampleData():
        """Add the synthetic PET/CT case to the Sample Data module (run once Slicer has started)."""
        from .sample_data import register_sample_data

        register_sample_data()

    def ensureDependencies(self, kind="classify"):
        """Whether what `kind` needs is installed, installing it after asking (PyTorch via its extension)."""
        from .first_use import ensure_dependencies

        return ensure_dependencies(kind)

    # ---------------------------------------------------------------------------------- scene inputs
    def pickCtVolume(self):
        """The scalar volume of the scene most likely to be the CT (None if there is none)."""
        from .scene_inputs import pick_ct_volume

        return pick_ct_volume(slicer.mrmlScene)

    def findSegmentIds(self, segmentationNode):
        """(liver segment ID, tumour segment ID) of `segmentationNode` picked by name; None where none fits."""
        from .scene_inputs import find_segment_ids

        return find_segment_ids(segmentationNode)

    def inputsFromParameters(self, p):
        """Classifier inputs {"ct", "mask", "pet_fdg", "pet_act"} from the nodes a parameter node selects."""
        from .scene_inputs import inputs_from_nodes

        return inputs_from_nodes(p.ctVolume, p.segmentation, p.liverSegmentId or None, p.tumourSegmentId or None,
                                 p.labelMapVolume, p.petFdgVolume, p.petActVolume)

    # ------------------------------------------------------------------------------- TotalSegmentator
    def totalSegmentatorProblem(self):
        """Why TotalSegmentator cannot be used (its extension is not installed), else None."""
        from .totalsegmentator import TOTALSEG_MISSING

        return None if hasattr(slicer.modules, "totalsegmentator") else TOTALSEG_MISSING

    def setupTotalSegmentator(self):
        """A TotalSegmentatorLogic with its Python requirements installed (raises when that fails)."""
        from TotalSegmentator import TotalSegmentatorLogic

        totalsegLogic = TotalSegmentatorLogic()
        totalsegLogic.setupPythonRequirements()
        return totalsegLogic

    def segmentWithTotalSegmentator(self, ctNode, totalsegLogic):
        """(segmentation, note) of `ctNode` with liver and liver-lesion segments (blocks while it runs); the
        note (else None) says the lesion task is missing and the segmentation has the liver only."""
        from .totalsegmentator import segment_with_totalsegmentator

        return segment_with_totalsegmentator(ctNode, totalsegLogic)

    # ---------------------------------------------------------------------------------------- models
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

    # -------------------------------------------------------------------------------------- classify
    def startClassification(self, modelDir, device, inputs):
        """An InferenceRequest running in the inference process; look at ``done``/``stage``/``fraction``.

        Args:
            modelDir: the model package folder.
            device: "auto", "cuda" or "cpu".
            inputs: what `inputsFromParameters` returns.
        """
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
        """Grade every case of a cohort in a child process; a rerun resumes.

        Args:
            source: a manifest CSV, or a folder of case folders (case/ct.nii.gz, case/mask.nii.gz, optional
                pet_fdg, pet_act).
            outDir: receives results.csv and cases/<case>/.
            modelDir: the model package (default: the shipped one).
            device: "auto", "cuda" or "cpu".
            progress: gets one event per case, on this thread.
            wait: False returns the RunHandle at once: call its ``dispatch()`` to deliver events,
                ``cancel()`` to stop.
        """
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

    # --------------------------------------------------------------------------------------- results
    def showResult(self, ctNode, result, segmentationNode=None, attentionKind="CBAM", opacity=0.5, showGraph=True):
        """Show `result` in the scene; the previous result is replaced only once this one is in place."""
        from .result_nodes import apply_result, remove_result

        nodes = apply_result(slicer.mrmlScene, ctNode, result, segmentationNode, attentionKind, opacity, showGraph)
        remove_result(slicer.mrmlScene, self.lastNodes)
        self.lastResult, self.lastNodes = result, nodes
        return nodes

    def removeResult(self, nodes):
        """Take a shown result's nodes out of the scene and restore what showing it changed."""
        from .result_nodes import remove_result

        remove_result(slicer.mrmlScene, nodes)

    def forgetResult(self):
        self.lastResult = self.lastNodes = None

    def updateDisplay(self, p):
        """Apply heat-map kind, opacity and graph visibility to the shown result."""
        if self.lastNodes is None or not self.lastNodes.attention:
            return
        from .result_nodes import set_attention_display, set_graph_visible

        set_attention_display(slicer.mrmlScene, self.lastNodes, p.attentionKind, p.opacity)
        set_graph_visible(self.lastNodes, p.showGraph)

    # ---------------------------------------------------------------------------------------- export
    def writeResultFiles(self, path):
        """Write the last result as `path` (result.json layout) and its region graph beside it."""
        from .result_nodes import write_result_files

        return write_result_files(self.lastResult, path)

    def saveScreenshot(self, path):
        """Save the view layout as an image file (Screen Capture module)."""
        import ScreenCapture

        ScreenCapture.ScreenCaptureLogic().captureImageFromView(None, path)

    def saveScene(self, path):
        """Save the whole scene as a Slicer bundle (.mrb)."""
        from reactkd.scene import save_mrb

        save_mrb(slicer.mrmlScene, path)
