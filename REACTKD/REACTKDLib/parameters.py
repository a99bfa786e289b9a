"""REACTKDParameterNode: the REACTKD module's inputs and display settings, bound to the widgets of
Resources/UI/REACTKD.ui by their SlicerParameterName and saved with the scene."""

from typing import Annotated

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class REACTKDParameterNode:
    """Inputs and display settings of the module, saved with the scene."""

    ctVolume: vtkMRMLScalarVolumeNode
    petFdgVolume: vtkMRMLScalarVolumeNode
    petActVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    liverSegmentId: str = ""
    tumourSegmentId: str = ""
    labelMapVolume: vtkMRMLLabelMapVolumeNode
    modelName: str = ""
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    attentionKind: Annotated[str, Choice(["CBAM", "Grad-CAM"])] = "CBAM"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    showGraph: bool = True
