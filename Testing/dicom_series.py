"""Test helper: write a CT-like image as a DICOM series (one file per slice)."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk


def write_dicom_series(image: sitk.Image, folder: str | os.PathLike, series_uid: str | None = None) -> Path:
    """Write a CT-like image as a DICOM series (one file per slice), mainly for tests and sample data."""
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image16 = sitk.Cast(sitk.Round(image), sitk.sitkInt16)
    direction = image.GetDirection()
    uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1000)}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image16.GetDepth()):
        slice_k = image16[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000e": uid,
            "0020|000d": uid + ".1",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                         direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0013": str(k + 1),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            slice_k.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(slice_k)
    return folder
