"""REACTKDTraining: headless Slicer module that trains and evaluates REACT-KD models in a child process.

A thin shell, like REACTKD.py: the module description and its (pointer-only) widget here; the logic in
REACTKDTrainingLib.logic (which adapts the Qt-free REACTKDTrainingLib.runner to Slicer) and the in-Slicer
self-test in REACTKDTrainingLib.self_test. Nothing heavy is imported at Slicer start-up.
"""

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget

from REACTKDTrainingLib.logic import REACTKDTrainingLogic  # noqa: F401 - Slicer looks it up in this module
from REACTKDTrainingLib.self_test import REACTKDTrainingTest  # noqa: F401 - Slicer looks it up in this module

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
        self.parent.dependencies = ["REACTKD"]  # its first-use installer (REACTKDLib.first_use) and catalogue
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
