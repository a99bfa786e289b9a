"""One-vs-rest AUC: the one implementation behind training's epoch choice and evaluation's report.

scikit-learn is imported inside the functions so that importing this module stays light.
"""

from __future__ import annotations

import numpy as np


def one_vs_rest_aucs(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """AUC of each class against the rest (None for a class absent from `labels`, or the only one present).

    Args:
        labels: (N,) class indices.
        probs: (N, K) class probabilities (or scores).

    Example:
        >>> import numpy as np
        >>> one_vs_rest_aucs(np.array([0, 1, 1]), np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.4, 0.6, 0]]))
        [1.0, 1.0, None]
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=probs.shape[1])
    return [float(roc_auc_score(labels == k, probs[:, k])) if 0 < counts[k] < len(labels) else None
            for k in range(probs.shape[1])]


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean of the defined one-vs-rest AUCs; NaN when fewer than two classes are present.

    Example:
        >>> import numpy as np
        >>> macro_auc(np.array([0, 1, 1, 0]), np.array([[0.7, 0.3], [0.4, 0.6], [0.45, 0.55], [0.5, 0.5]]))
        1.0
    """
    defined = [auc for auc in one_vs_rest_aucs(labels, probs) if auc is not None]
    return float(np.mean(defined)) if defined else float("nan")
