"""REACTKD: grade hepatocellular carcinoma from CT (or PET/CT) with a REACT-KD model and show why.

The module file stays thin: the work lives in the ``reactkd`` package shipped beside it (no Qt there) and
in ``reactkd.scene`` (MRML nodes). Heavy packages (torch, monai) are imported inside functions only, so
Slicer starts fast and nothing is installed or loaded before the user asks for it.
"""

import logging

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class REACTKD(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("REACT-KD")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Classification")]
        self.parent.dependencies = []
        self.parent.contributors = ["REACT-KD contributors"]
        self.parent.helpText = _(
            "Grade hepatocellular carcinoma (well / moderately / poorly differentiated) from a CT, "
            "optionally with FDG and acetate PET, and a liver/tumour segmentation. Shows the grade "
            "probabilities, an attention heat map and the region graph the model reasons on. "
            "Models: the demonstration model shipped with the extension, models trained with the "
            "REACTKDTraining module, or a model package imported from a folder.<br>"
            "<b>Research software, not for clinical use.</b>")
        self.parent.acknowledgementText = _(
            "REACT-KD: region-aware cross-modal topological knowledge distillation for interpretable "
            "medical image classification. Built on 3D Slicer, PyTorch, MONAI, SimpleITK and POT.")


class REACTKDWidget(ScriptedLoadableModuleWidget):
    """GUI. Kept minimal here; the inputs, model selector, Classify and results panels are added on top."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        self.logic = REACTKDLogic()
        self.statusLabel = qt.QLabel(_("REACT-KD module"))
        self.statusLabel.wordWrap = True
        self.layout.addWidget(self.statusLabel)
        self.layout.addStretch(1)


class REACTKDLogic(ScriptedLoadableModuleLogic):
    """Non-GUI entry points; the heavy lifting is delegated to the ``reactkd`` package."""

    def modelCatalog(self):
        """The catalogue of shipped and user-registered model packages (no heavy imports)."""
        from reactkd.catalog import ModelCatalog

        return ModelCatalog()


class REACTKDTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, or ctest)."""

    def setUp(self):
        import slicer

        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_catalogue_lists_shipped_model()

    def test_catalogue_lists_shipped_model(self):
        self.delayDisplay("Model catalogue")
        names = [entry.name for entry in REACTKDLogic().modelCatalog().shipped_entries()]
        logging.info("shipped models: %s", names)
        self.assertIn("reactkd-demo-student", names)
