"""Inference: classify one case and map probabilities, attention and the region graph to the native CT.

Import nothing heavy here: Slicer's own process imports `reactkd.inference.client` (the serve client) and
`reactkd.inference.result`, which must not pull in torch. The classifier is
`reactkd.inference.classifier.Classifier`; its result type is `reactkd.inference.result.ClassificationResult`.
"""
