"""REACTKDWidget: the REACTKD module's panel (inputs, model, Classify, results, display and export).

Qt wiring only: every piece of work goes through REACTKDLogic (REACTKDLib.logic), which never blocks the GUI
for a classification: the inputs are read from the scene on the main thread (fast); a ``PythonSlicer -m
reactkd serve`` child loads the model once, keeps it warm and classifies; a QTimer looks at the request's
state without waiting, and the result is turned into nodes on the main thread. Cancel kills the child; a
crash in it is reported and leaves Slicer running.
"""

import logging

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .logic import REACTKDLogic

POLL_INTERVAL_MS = 100  # only reads the request's state: never waits


def sameNode(a, b):
    """Whether two MRML node references (or None) name the same node."""
    return (a is None and b is None) or (a is not None and b is not None and a.GetID() == b.GetID())



class REACTKDWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Inputs, model, Classify, results, display and export panels."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobTarget = None
        self._segmenting = False  # TotalSegmentator runs on the main thread and pumps events: no re-entry
        self._timer = None
        self._lastSegmentation = None
        self._lastLabelMap = None
        self._dependenciesReady = False
        self._updating = False
        self._entries = {}
        self._lastDisplay = None

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        problem = REACTKDLogic.unsupportedSlicer()
        if problem:  # an old Slicer: say so instead of failing on a traceback later
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/REACTKD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = REACTKDLogic()
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.liverSegmentSelector.connect("currentSegmentChanged(QString)", self.onLiverSegmentChanged)
        self.ui.tumourSegmentSelector.connect("currentSegmentChanged(QString)", self.onTumourSegmentChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.openModelFolderButton.connect("clicked(bool)", self.onOpenModelFolder)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.classifyButton.connect("clicked(bool)", self.onClassify)
        self.ui.totalSegmentatorButton.connect("clicked(bool)", self.onTotalSegmentator)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportJsonButton.connect("clicked(bool)", self.onExportJson)
        self.ui.screenshotButton.connect("clicked(bool)", self.onScreenshot)
        self.ui.exportSceneButton.connect("clicked(bool)", self.onExportScene)
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self):
        if self.logic is not None:
            self.onCancel()
            self.logic.shutdown()
        self.removeObservers()

    def enter(self):
        if self.logic is None:  # unsupported Slicer: nothing was set up
            return
        self.populateModels()  # REACTKDTraining may have registered a model meanwhile
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.logic.forgetResult()
        self.setParameterNode(None)
        # References would keep the closed scene's nodes (and their images) alive.
        self._lastSegmentation = self._lastLabelMap = self._jobTarget = None

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.ctVolume:
            self._parameterNode.ctVolume = self.logic.pickCtVolume()
        if not self._parameterNode.segmentation and not self._parameterNode.labelMapVolume:
            self._parameterNode.segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        if not self._parameterNode.modelName and self.ui.modelComboBox.count:
            self._parameterNode.modelName = self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex)

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    # --------------------------------------------------------------------------------- state updates
    def onParameterChanged(self, caller=None, event=None):
        if self._updating or self._parameterNode is None:
            return
        self._updating = True
        try:
            self._syncMaskInputs()
            self._selectModel(self._parameterNode.modelName)
            p = self._parameterNode
            display = (p.attentionKind, p.opacity, p.showGraph)
            if display != self._lastDisplay:  # only then: it also resets the views' background to the CT
                self.logic.updateDisplay(p)
                self._lastDisplay = display
            self._updateButtons()
        finally:
            self._updating = False

    def _syncMaskInputs(self):
        """One mask source at a time; a new segmentation gets its liver/tumour segments picked by name."""
        p = self._parameterNode
        if p.segmentation and p.labelMapVolume:
            if not sameNode(p.labelMapVolume, self._lastLabelMap):
                p.segmentation = None
            else:
                p.labelMapVolume = None
        if not sameNode(p.segmentation, self._lastSegmentation):
            # Keep picks that still name segments of this segmentation (a reloaded scene); else pick by name.
            segmentation = p.segmentation.GetSegmentation() if p.segmentation else None
            if not (segmentation and segmentation.GetSegment(p.liverSegmentId)
                    and segmentation.GetSegment(p.tumourSegmentId)):
                liverId, tumourId = self.logic.findSegmentIds(p.segmentation)
                p.liverSegmentId, p.tumourSegmentId = liverId or "", tumourId or ""
        for selector, segmentId in ((self.ui.liverSegmentSelector, p.liverSegmentId),
                                    (self.ui.tumourSegmentSelector, p.tumourSegmentId)):
            if not sameNode(selector.currentNode(), p.segmentation):
                selector.setCurrentNode(p.segmentation)
            if selector.currentSegmentID() != segmentId:
                selector.setCurrentSegmentID(segmentId)
        self._lastSegmentation, self._lastLabelMap = p.segmentation, p.labelMapVolume

    def onLiverSegmentChanged(self, segmentId):
        if self._parameterNode and not self._updating:
            self._parameterNode.liverSegmentId = segmentId or ""

    def onTumourSegmentChanged(self, segmentId):
        if self._parameterNode and not self._updating:
            self._parameterNode.tumourSegmentId = segmentId or ""

    def _updateButtons(self):
        p = self._parameterNode
        if p is None:  # between a scene's close and the next parameter node (TotalSegmentator pumps events)
            return
        entry = self._currentEntry()
        running = self._job is not None or self._segmenting
        ready = bool(p.ctVolume and (p.segmentation or p.labelMapVolume) and entry and entry.available)
        self.ui.classifyButton.enabled = ready and not running
        self.ui.totalSegmentatorButton.enabled = not running
        self.ui.classifyButton.toolTip = _("Classify the tumour grade.") if ready else _(
            "Select a CT, a segmentation (or label map) and an installed model.")
        self.ui.removeModelButton.enabled = bool(entry and entry.source != "shipped")
        self.ui.openModelFolderButton.enabled = bool(entry and entry.path.is_dir())
        self.ui.exportJsonButton.enabled = self.logic.lastResult is not None
        loaded = entry is not None and self.logic.loadedDevice(entry.path, p.device)
        self.ui.deviceUsedLabel.text = _("Used: {device}").format(device=loaded) if loaded else _("Used: (not loaded)")

    # ---------------------------------------------------------------------------------------- models
    def populateModels(self):
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            entries = self.logic.modelCatalog().entries()
        except Exception as exc:  # a damaged user catalogue must not hide the shipped model
            logging.warning("REACT-KD model catalogue: %s", exc)
            entries = self.logic.modelCatalog().shipped_entries()
        for entry in entries:
            label = f"{entry.name} {entry.version}".strip()
            if not entry.available:
                label += " " + _("(not installed)")
            combo.addItem(label, entry.name)
        combo.blockSignals(wasBlocked)
        self._entries = {entry.name: entry for entry in entries}

    def _currentEntry(self):
        name = self.ui.modelComboBox.itemData(self.ui.modelComboBox.currentIndex)
        return self._entries.get(name)

    def _selectModel(self, name):
        index = self.ui.modelComboBox.findData(name) if name else -1
        if index >= 0 and index != self.ui.modelComboBox.currentIndex:
            self.ui.modelComboBox.currentIndex = index
        entry = self._currentEntry()
        if entry is not None:
            modalities = ", ".join(entry.input_modalities) or "?"
            self.ui.modelInfoLabel.text = f"{entry.description}\n" + _("Reads: {modalities}; source: {source}").format(
                modalities=modalities, source=entry.source)

    def onModelChanged(self, index):
        if self._parameterNode and not self._updating:
            self._parameterNode.modelName = self.ui.modelComboBox.itemData(index) or ""

    def onImportModel(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Select a REACT-KD model package folder"))
        if not folder:
            return
        entry = self._reportErrors(lambda: self.logic.modelCatalog().import_folder(folder))
        if entry is not None:
            self.populateModels()
            self._parameterNode.modelName = entry.name

    def onOpenModelFolder(self):
        entry = self._currentEntry()
        if entry is not None:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(entry.path)))

    def onRemoveModel(self):
        entry = self._currentEntry()
        if entry is None or not slicer.util.confirmOkCancelDisplay(
                _("Remove model {name} from the catalogue? An imported copy is deleted; a registered folder "
                  "stays on disk.").format(name=entry.name)):
            return
        if self._reportErrors(lambda: self.logic.modelCatalog().remove(entry.name, delete_files=True)) is not None:
            self.logic.forgetModel(entry.path)
            self.populateModels()
            self._parameterNode.modelName = self.ui.modelComboBox.itemData(0) or ""

    def onTotalSegmentator(self):
        """Segment liver and tumour with the TotalSegmentator extension and select the result."""
        if self._segmenting or self._job is not None:  # its log reader pumps events: a second click lands here
            return
        ctNode = self._parameterNode.ctVolume
        if ctNode is None:
            slicer.util.errorDisplay(_("Select the CT first."), windowTitle="REACT-KD")
            return
        problem = self.logic.totalSegmentatorProblem()
        if problem:
            slicer.util.infoDisplay(problem, windowTitle="REACT-KD")
            return
        totalsegLogic = self._reportErrors(self.logic.setupTotalSegmentator)
        if totalsegLogic is None:
            return
        self.ui.statusLabel.text = _("TotalSegmentator is running (minutes on a CPU)...")
        self._segmenting = True
        self._updateButtons()
        try:
            with slicer.util.WaitCursor():
                outcome = self._reportErrors(lambda: self.logic.segmentWithTotalSegmentator(ctNode, totalsegLogic))
        finally:
            self._segmenting = False
            self.ui.statusLabel.text = ""
            self._updateButtons()
        if outcome is not None:
            segmentation, note = outcome
            self._parameterNode.labelMapVolume = None
            self._parameterNode.segmentation = segmentation  # picks the liver (and the tumour) by name
            slicer.util.infoDisplay(note or _("Liver and tumour segmented. Check them (Segment Editor) before you "
                                              "classify."), windowTitle="REACT-KD")

    # -------------------------------------------------------------------------------------- classify
    def onClassify(self):
        if self._job is not None or self._segmenting or not self.ensureDependencies():
            return
        p = self._parameterNode
        entry = self._currentEntry()
        with slicer.util.WaitCursor():
            inputs = self._reportErrors(lambda: self.logic.inputsFromParameters(p))
        if inputs is None or entry is None:
            return
        job = self._reportErrors(lambda: self.logic.startClassification(entry.path, p.device, inputs))
        if job is None:  # e.g. "already running" from a re-entered click
            return
        self._jobTarget = (p.ctVolume, p.segmentation)
        self._job = job
        self.ui.progressBar.value = 5
        self.ui.progressBar.show()
        self.ui.cancelButton.show()
        loading = not self.logic.loadedDevice(entry.path, p.device)
        self.ui.statusLabel.text = _("Loading the model (the first time takes a while)...") if loading else _(
            "Classifying...")
        self._updateButtons()
        self._timer.start()

    def onPollJob(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        if not job.done:
            self.ui.progressBar.value = int(100 * job.fraction)
            self.ui.statusLabel.text = _("Stage: {stage}").format(stage=job.stage)
            return
        self._finishJob()
        (ctNode, segmentationNode), self._jobTarget = self._jobTarget, None
        result = self._reportErrors(job.result)
        if result is None:
            self._updateButtons()
            return
        p = self._parameterNode
        shown = self._reportErrors(lambda: self.logic.showResult(
            ctNode, result, segmentationNode, p.attentionKind, p.opacity, p.showGraph))
        if shown is not None:
            self.showResultSummary(result)
        self._updateButtons()

    def onCancel(self):
        if self._job is None:
            return
        self.logic.cancelClassification()
        self._finishJob()
        self._jobTarget = None
        self.ui.statusLabel.text = _("Cancelled: the classification process was stopped.")
        self._updateButtons()

    def _finishJob(self):
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self.ui.statusLabel.text = ""

    def showResultSummary(self, result):
        self.ui.gradeLabel.text = _("Grade: {grade}").format(grade=result.grade)
        # The prediction set first: "refer: the image alone does not settle the grade (...)" must not be missed.
        self.ui.trustLabel.text = "\n".join(result.trust_lines())
        layout = self.ui.probabilitiesFrame.layout()
        while layout.rowCount():  # removeRow deletes the row's widgets and the row (takeAt left empty rows)
            layout.removeRow(0)
        for name in result.class_names:
            bar = qt.QProgressBar()
            bar.maximum = 1000
            bar.value = int(round(1000 * result.probabilities[name]))
            bar.format = f"{100 * result.probabilities[name]:.1f} %"
            layout.addRow(name, bar)
        timings = ", ".join(f"{key} {value:.0f} ms" for key, value in result.timings_ms.items())
        self.ui.timingsLabel.text = _("Model {model} on {device}; {timings}").format(
            model=result.model.get("name", "?"), device=result.device, timings=timings)
        self.ui.warningsLabel.text = "\n".join(result.warnings)
        if result.warnings:
            slicer.util.warningDisplay("\n".join(result.warnings), windowTitle="REACT-KD")

    def ensureDependencies(self):
        """Ask before installing PyTorch (PyTorch extension) and the packages Classify needs."""
        if not self._dependenciesReady:  # an install failure (offline, pip error) is shown, not only logged
            self._dependenciesReady = bool(self._reportErrors(lambda: self.logic.ensureDependencies("classify")))
        return self._dependenciesReady

    def _reportErrors(self, action):
        """Run `action`; show a ReactKDError as its one-line message, anything else as one line too (the
        traceback goes to the Python console log). Returns None on failure."""
        from reactkd.errors import ReactKDError

        try:
            return action()
        except ReactKDError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="REACT-KD")
        except Exception as exc:
            logging.exception("REACT-KD")
            slicer.util.errorDisplay(_("REACT-KD failed: {error}").format(error=exc), windowTitle="REACT-KD")
        return None

    # ---------------------------------------------------------------------------------------- export
    def onExportJson(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Save result"), "result.json", "JSON (*.json)")
        if path and self.logic.lastResult is not None:
            self._reportErrors(lambda: self.logic.writeResultFiles(path))

    def onScreenshot(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Save screenshot"), "reactkd.png", "PNG (*.png)")
        if path:
            self._reportErrors(lambda: self.logic.saveScreenshot(path))

    def onExportScene(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, _("Save scene"), "reactkd.mrb", "Slicer bundle (*.mrb)")
        if path:
            with slicer.util.WaitCursor():
                self._reportErrors(lambda: self.logic.saveScene(path))
