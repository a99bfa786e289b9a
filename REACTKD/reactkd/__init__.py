"""REACT-KD core package: HCC grading from CT (and PET/CT) by region-aware cross-modal distillation.

This package never imports Slicer, Qt or VTK, except in the `reactkd.scene` subpackage (slicer only).
Heavy dependencies (torch, monai) are imported by the submodules that need them, not here.
"""

__version__ = "0.1.0"
