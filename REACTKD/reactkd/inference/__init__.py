"""Inference: classify one case and map probabilities, attention and the region graph to the native CT."""

from reactkd.inference.classifier import DEFAULT_MODEL, ClassificationResult, Classifier

__all__ = ["DEFAULT_MODEL", "ClassificationResult", "Classifier"]
