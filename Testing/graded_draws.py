"""Test helper: grades and softmax probabilities that carry a known amount of signal about them."""

import numpy as np


def graded_draws(n: int, seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """(grades (n,), probabilities (n, 3)): logits N(0, 1) plus ``signal`` on the true grade."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + signal * np.eye(3)[y]
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
