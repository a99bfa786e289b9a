"""Codes of the internal tissue volume of a synthetic case (not the exported mask, which is 0/1/2)."""

from __future__ import annotations

from enum import IntEnum


class Tissue(IntEnum):
    """Codes of the internal tissue volume (not the exported mask, which is 0/1/2)."""

    AIR = 0
    SUBCUT_FAT = 1
    MUSCLE = 2
    VISCERA = 3
    VISCERAL_FAT = 4
    CORTICAL_BONE = 5
    CANCELLOUS_BONE = 6
    DISC = 7
    CANAL = 8
    AORTA = 9
    KIDNEY = 10
    SPLEEN = 11
    LUNG = 12
    LIVER = 13
    TUMOUR = 14
    NECROSIS = 15


N_TISSUES = len(Tissue)
