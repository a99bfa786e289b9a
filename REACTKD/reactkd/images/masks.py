"""Input label maps from binary masks: 0 background, 1 liver, 2 tumour; where both masks cover a voxel, the
tumour wins (the usual way to draw them: the liver segment includes its tumours)."""

from __future__ import annotations

import numpy as np

from reactkd.vocabulary import BACKGROUND_CODE, LIVER_CODE, TUMOUR_CODE


def label_codes(liver: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """uint8 label map of two boolean masks of the same shape; tumour wins where both are set.

    Example:
        >>> import numpy as np
        >>> label_codes(np.array([1, 1, 0], bool), np.array([0, 1, 0], bool)).tolist()
        [1, 2, 0]
    """
    return np.where(tumour, TUMOUR_CODE, np.where(liver, LIVER_CODE, BACKGROUND_CODE)).astype(np.uint8)
