"""REACT-KD core package: HCC grading from CT (and PET/CT) by region-aware cross-modal distillation.

This package never imports Slicer, Qt or VTK, except in the `reactkd.scene` subpackage (slicer only).
Heavy dependencies (torch, monai) are imported by the submodules that need them, not here.
"""

__version__ = "0.1.0"

CLASS_NAMES = ("well", "moderate", "poor")
#: Image channels, in order, of every model input tensor (B, 3, D, H, W).
MODALITIES = ("ct", "pet_fdg", "pet_act")
#: Classification heads: region-aware pooling (default) or the paper's global average pooling.
HEADS = ("region", "global")
