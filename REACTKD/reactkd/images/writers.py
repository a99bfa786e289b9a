"""Verified atomic image writers: the file is checked complete before it is renamed into place (ITK's writers
do not report a full disk), detached-header formats are written data file first, header last."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.atomic import atomic_path
from reactkd.errors import ImageReadError, ImageWriteError
from reactkd.images.readers import first_error_line

WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_SUFFIXES = (".nhdr", ".mhd")  # header and voxels in two files; the header names the data file


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True, level: int = -1) -> Path:
    """Write an image atomically; the format follows the suffix (.nii.gz, .nrrd, .mha, ...). `level` is the zlib
    compression level (-1: ITK's default; 1 is about as fast as no compression on mostly-zero maps)."""
    path = Path(path)
    if not str(path).lower().endswith(WRITABLE_SUFFIXES):
        raise ImageReadError(f"{path}: unsupported output format (use one of {', '.join(WRITABLE_SUFFIXES)})")
    if str(path).lower().endswith(DETACHED_SUFFIXES):
        return _write_detached(image, path, compress, level)
    with atomic_path(path) as tmp:
        _write_checked(image, tmp, path, compress, level)
    return path


def _write_checked(image: sitk.Image, target: Path, shown: Path, compress: bool, level: int) -> None:
    try:
        sitk.WriteImage(image, str(target), useCompression=compress, compressionLevel=level)
    except RuntimeError as exc:
        raise ImageWriteError(f"{shown}: could not be written ({first_error_line(exc)})") from None
    verify_written_image(target, image, shown=shown)


def _write_detached(image: sitk.Image, path: Path, compress: bool, level: int) -> Path:
    """A detached-header image is written under its final names in a private folder beside `path` (so the
    header names the final data file), checked there, then moved out: data file first, header last. A
    failure leaves the previous files; a rewrite replaces the data file instead of leaving the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name.split('.')[0]}-", dir=path.parent))
    try:
        staged = staging / path.name
        _write_checked(image, staged, path, compress, level)
        for data_file in staging.iterdir():
            if data_file != staged:
                os.replace(data_file, path.parent / data_file.name)
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


_NIFTI_HEADERS = (352, 544)  # NIfTI-1 and NIfTI-2 header + extension flag: where the voxels start


def verify_written_image(path: Path, image: sitk.Image, shown: str | os.PathLike | None = None) -> None:
    """Check that `path` holds all of `image`'s voxels before it is renamed into place: ITK's writers do not
    report a full disk, they leave a truncated file. Cheap: file sizes, the gzip trailer's length field, the
    MetaImage header's data size; a full read-back only for the detached-header formats."""
    data = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()
    size = path.stat().st_size
    name = str(path).lower()
    if name.endswith(".nii.gz") or name.endswith(".nrrd"):
        header = b""
        if name.endswith(".nrrd"):
            with open(path, "rb") as handle:
                head = handle.read(65536)
            end = head.find(b"\n\n")
            header = head[:end + 2] if end >= 0 else b""
        gzipped = name.endswith(".gz") or b"encoding: gzip" in header
        if gzipped:
            with open(path, "rb") as handle:
                handle.seek(max(size - 4, 0))
                stored = int.from_bytes(handle.read(4), "little")  # ISIZE: uncompressed length mod 2**32
            wanted = [(h + data) % 2**32 for h in _NIFTI_HEADERS] if name.endswith(".gz") else [data % 2**32]
            complete = size > 18 and stored in wanted
        else:
            complete = bool(header) and size == len(header) + data
    elif name.endswith(".nii"):
        complete = size in [h + data for h in _NIFTI_HEADERS]
    elif name.endswith(".mha"):
        with open(path, "rb") as handle:
            head = handle.read(65536)
        end = head.find(b"ElementDataFile = LOCAL\n")
        fields = dict(line.split(" = ", 1) for line in head[:max(end, 0)].decode("latin-1").splitlines() if " = " in line)
        payload = int(fields.get("CompressedDataSize", data)) if fields.get("CompressedData") == "True" else data
        complete = end >= 0 and size == end + len("ElementDataFile = LOCAL\n") + payload
    else:
        try:
            back = sitk.ReadImage(str(path))
            complete = back.GetSize() == image.GetSize() and np.array_equal(
                sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
        except RuntimeError:
            complete = False
    if not complete:
        raise ImageWriteError(f"{shown or path}: the file was not written completely (is the disk full?); nothing "
                              "was kept")
