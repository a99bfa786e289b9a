"""REACTKD: grade hepatocellular carcinoma from CT (or PET/CT) with a REACT-KD model and show why.

The module file is a thin shell, as Slicer's convention (and SlicerNNUNet's) has it: the module description
here; the panel in ``REACTKDLib.widget``, which talks only to ``REACTKDLib.logic.REACTKDLogic``; the
parameter node in ``REACTKDLib.parameters``; the in-Slicer self-test in ``REACTKDLib.self_test``. Scene work
(``REACTKDLib.scene_inputs``, ``result_nodes``, ``totalsegmentator``, ``sample_data``, ``first_use``) has no
Qt and is tested against a headless MRML scene; classification runs in a persistent child process
(``reactkd.inference.client``). Heavy packages (torch, monai) are never imported in Slicer's own process.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

from REACTKDLib.logic import REACTKDLogic
from REACTKDLib.parameters import REACTKDParameterNode  # noqa: F401 - importable from the module, as before
from REACTKDLib.self_test import REACTKDTest  # noqa: F401 - Slicer looks it up in this module
from REACTKDLib.widget import REACTKDWidget  # noqa: F401 - Slicer looks it up in this module


class REACTKD(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("REACT-KD")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["REACT-KD developers (REACT-KD open-source project)"]
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
        slicer.app.connect("startupCompleted()", REACTKDLogic.registerSampleData)
