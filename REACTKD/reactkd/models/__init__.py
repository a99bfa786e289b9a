"""Networks: CBAM3D, the two teachers, the student, modality dropout and the Grad-CAM adapter.

Every model: ``forward(images (B, 3, D, H, W), available (B, 3) bool) -> ModelOutput`` with channels in
``reactkd.MODALITIES`` order, ``attention_map()``, ``teacher_available(available)``, ``cam_layer``,
``input_modalities``, ``architecture`` and ``config``.
"""

from reactkd.models.base import GRAPH_MAPS, ModelOutput, ReactKDModel, graph_map
from reactkd.models.cbam import CBAM3D
from reactkd.models.dropout import apply_modality_dropout
from reactkd.models.gradcam import GradCamAdapter
from reactkd.models.registry import ARCHITECTURES, build_model
from reactkd.models.student import Student
from reactkd.models.teachers import DoseAwareTeacher, StructureFunctionTeacher, SwinFeatureEncoder

__all__ = [
    "ARCHITECTURES",
    "CBAM3D",
    "GRAPH_MAPS",
    "DoseAwareTeacher",
    "GradCamAdapter",
    "ModelOutput",
    "ReactKDModel",
    "Student",
    "StructureFunctionTeacher",
    "SwinFeatureEncoder",
    "apply_modality_dropout",
    "build_model",
    "graph_map",
]
