"""Qt-free helpers of the REACTKDTraining module (child-process runner for ``reactkd`` commands)."""

from .runner import RunHandle, TrainingRunner, slicer_python_executable

__all__ = ["RunHandle", "TrainingRunner", "slicer_python_executable"]
