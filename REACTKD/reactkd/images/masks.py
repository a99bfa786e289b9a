"""Input label maps from binary masks: 0 background, 1 liver, 2 tumour; where both masks cover a voxel, the
tumour wins (the usual way to draw them: the liver segment includes its tumours). And the one rule that
names a segment liver or tumour, shared by the Slicer module's segment pickers and the DICOM SEG reader."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from reactkd.vocabulary import BACKGROUND_CODE, LIVER_CODE, TUMOUR_CODE

LIVER_WORDS = frozenset({"liver"})
TUMOUR_WORDS = frozenset({"tumour", "tumor", "mass", "lesion", "tumours", "tumors", "masses", "lesions",
                          "neoplasm", "neoplasms"})  # TotalSegmentator's standard names: "liver lesion", "neoplasm"


def label_codes(liver: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """uint8 label map of two boolean masks of the same shape; tumour wins where both are set.

    Example:
        >>> import numpy as np
        >>> label_codes(np.array([1, 1, 0], bool), np.array([0, 1, 0], bool)).tolist()
        [1, 2, 0]
    """
    return np.where(tumour, TUMOUR_CODE, np.where(liver, LIVER_CODE, BACKGROUND_CODE)).astype(np.uint8)


def name_words(name: str) -> set[str]:
    """The lower-case words of a name ("Liver tumor 1" -> {"liver", "tumor"})."""
    return {word for word in re.split(r"[^a-z]+", name.lower()) if word}


def pick_liver_tumour(names: Sequence[str]) -> tuple[int | None, int | None]:
    """(index of the liver, index of the tumour) among segment `names`, None where no name fits.

    A name is a tumour when one of its words is tumour, tumor, mass, lesion or neoplasm (singular or plural),
    so "Liver tumor 1" is a tumour; it is the liver when a word is "liver" and it is not a tumour. An exact
    name ("liver", "tumour") beats a longer one; among equals the first wins.

    Example:
        >>> pick_liver_tumour(["Portal vein", "Liver lesion", "Liver", "Mass"])
        (2, 3)
    """
    liver: list[tuple[int, int]] = []
    tumour: list[tuple[int, int]] = []
    for index, name in enumerate(names):
        words = name_words(name or "")
        candidate = (0 if (name or "").strip().lower() in LIVER_WORDS | TUMOUR_WORDS else 1, index)
        if words & TUMOUR_WORDS:
            tumour.append(candidate)
        elif words & LIVER_WORDS:
            liver.append(candidate)
    return (min(liver)[1] if liver else None), (min(tumour)[1] if tumour else None)
