"""Image readers with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series folders, each checked before its
voxels are allocated (size, spacing, data length, finite values).

Arrays follow SimpleITK's numpy convention: shape (z, y, x). Physical space is ITK's LPS (millimetres).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.errors import GeometryError, ImageReadError
from reactkd.images.image_files import data_file_names, image_files

#: Refuse images with more voxels than this before allocating them (a 1024^2 x 2000 CT is ~2.1e9).
MAX_VOXELS = 2_200_000_000
#: Plausible voxel spacing range in mm.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 100.0


def _check_header(path: str, reader: sitk.ImageFileReader) -> None:
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4 and size[3] == 1:  # a 3D volume stored as 4D with one time point: the same checks apply
        dim, size = 3, size[:3]
    if dim != 3:
        raise ImageReadError(f"{path}: expected a 3D image, got {dim}D with size {size}")
    if reader.GetNumberOfComponents() != 1:
        raise ImageReadError(f"{path}: expected a scalar image, got {reader.GetNumberOfComponents()} components")
    if int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
        raise GeometryError(f"{path}: image of size {size} is too large (more than {MAX_VOXELS} voxels)")


def validate_image(image: sitk.Image, name: str = "image") -> sitk.Image:
    """Check that an image is 3D, scalar, of sane spacing and free of NaN/Inf; return it as float32."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise ImageReadError(f"{name}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(f"{name}: expected a scalar image, got a multi-component image")
    if int(np.prod(image.GetSize(), dtype=np.int64)) > MAX_VOXELS:
        raise GeometryError(f"{name}: image of size {image.GetSize()} is too large")
    if min(image.GetSize()) < 2:
        raise ImageReadError(f"{name}: a 3D volume needs at least 2 voxels along each axis, got {image.GetSize()}")
    spacing = np.asarray(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        shown = ", ".join(f"{value:g}" for value in spacing)
        raise GeometryError(f"{name}: implausible voxel spacing ({shown}) mm")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        # |det| = 1 is not enough: a shear with determinant 1 would give maps whose headers differ from the CT's.
        raise GeometryError(f"{name}: direction matrix is not orthonormal (its columns must be perpendicular "
                            "unit vectors)")
    if not np.all(np.isfinite(image.GetOrigin())):
        raise GeometryError(f"{name}: origin is not finite")
    return image


def image_spacing(path: str | os.PathLike) -> tuple[float, float, float]:
    """Voxel spacing (x, y, z) in mm, from a file's header alone (a DICOM series folder is read whole)."""
    if os.path.isdir(path):
        return tuple(float(v) for v in read_image(path).GetSpacing())
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: not a readable image ({first_error_line(exc)})") from None
    return tuple(float(v) for v in reader.GetSpacing())


def read_image(path: str | os.PathLike, name: str | None = None, labels: bool = False) -> sitk.Image:
    """Read a 3D image from a file (NIfTI, NRRD, MetaImage, ...) or a DICOM series folder.

    Raises ImageReadError / GeometryError with a one-line message for anything unusable. Pixel values
    are returned as float32; NaN or infinite voxels are an error. With ``labels=True`` (label maps and
    masks) an integer pixel type is kept: no float copy and no finiteness pass, and `check_mask` can skip its
    whole-number pass (0.2 s on a 512 x 512 x 154 mask); float files are still returned as float32.
    """
    path = str(path)
    name = name or path
    image_files(path, name)  # special files and data files outside the header's folder, before anything opens
    if os.path.isdir(path):
        image = _read_dicom_folder(path, name)
    else:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{name}: file is empty")
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageReadError(f"{name}: not a readable image ({first_error_line(exc)})") from None
        _check_header(name, reader)
        _check_nifti_payload(path, reader, name)
        _check_inline_data_size(path, reader, name)
        try:
            image = reader.Execute()
        except (RuntimeError, MemoryError) as exc:
            raise ImageReadError(f"{name}: image data could not be read ({first_error_line(exc)})") from None
    image = validate_image(image, name)
    if labels and image.GetPixelID() in _INTEGER_PIXEL_IDS:
        return image
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        raise ImageReadError(f"{name}: contains NaN or infinite voxels")
    return image


def _check_nifti_payload(path: str, reader: sitk.ImageFileReader, name: str) -> None:
    """Refuse, from the raw bytes, a truncated NIfTI file and float voxels that are NaN or infinite: ITK's NIfTI
    reader fills missing voxels with zeros and sets non-finite ones to 0 before anything else sees them."""
    data = _nifti_data_file(path)
    if data is None:
        return
    try:
        count = int(np.prod([int(reader.GetMetaData(f"dim[{i}]")) for i in range(1, int(reader.GetMetaData("dim[0]")) + 1)],
                            dtype=np.int64))
        offset = int(float(reader.GetMetaData("vox_offset")))
        needed = offset + count * int(reader.GetMetaData("bitpix")) // 8
    except (RuntimeError, ValueError):
        return  # header fields missing: leave the decision to ITK
    dtype = _nifti_float_dtype(path)
    scan = _FiniteScan(dtype, offset, needed) if dtype is not None else None
    if not data.lower().endswith(".gz"):
        available = os.path.getsize(data)
        if scan is not None and available >= needed:
            with open(data, "rb") as handle:
                handle.seek(offset)
                scan.position = offset
                while scan.finite and scan.position < needed and (chunk := handle.read(1 << 24)):
                    scan.feed(chunk)
    else:
        available = _gzip_length(data, needed, name, scan.feed if scan is not None else None)
    if available < needed:
        raise ImageReadError(f"{name}: file is truncated ({available} of {needed} bytes of image data)")
    if scan is not None and not scan.finite:
        raise ImageReadError(f"{name}: contains NaN or infinite voxels")


def _nifti_data_file(path: str) -> str | None:
    """The file holding a NIfTI image's voxels: the .nii itself, or the .img of a .hdr/.img pair; None otherwise."""
    lower = path.lower()
    if lower.endswith((".nii", ".nii.gz")):
        return path
    if lower.endswith(".hdr"):  # the pair's data file, by the one rule of image_files
        folder = os.path.dirname(path)
        return next((os.path.join(folder, n) for n in data_file_names(Path(path)) if os.path.isfile(os.path.join(folder, n))),
                    None)
    return None


#: NIfTI datatype codes of the float types (the only ones that hold NaN or infinity; complex is refused earlier).
_NIFTI_FLOAT_CODES = {16: "f4", 64: "f8"}


def _nifti_float_dtype(path: str) -> np.dtype | None:
    """The voxel type of a float NIfTI-1/-2 file, byte order included, from its own header; None otherwise."""
    import gzip
    import struct

    try:
        with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as handle:
            head = handle.read(540)
    except (OSError, EOFError, ValueError):  # corrupt compressed data: the length check reports it
        return None
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] in (348, 540):
            at = 70 if struct.unpack(order + "i", head[:4])[0] == 348 else 12  # NIfTI-1 / NIfTI-2 layout
            kind = _NIFTI_FLOAT_CODES.get(struct.unpack(order + "h", head[at:at + 2])[0])
            return np.dtype(order + kind) if kind else None
    return None


class _FiniteScan:
    """Whether the values in bytes [start, stop) of a stream, fed in pieces of any length, are all finite."""

    def __init__(self, dtype: np.dtype, start: int, stop: int) -> None:
        self.dtype, self.start, self.stop = dtype, start, stop
        self.position, self.rest, self.finite = 0, b"", True

    def feed(self, data: bytes) -> None:
        begin = self.position
        self.position += len(data)
        low, high = max(begin, self.start), min(self.position, self.stop)
        if not self.finite or low >= high:
            return
        piece = self.rest + data[low - begin:high - begin]
        usable = len(piece) - len(piece) % self.dtype.itemsize
        self.finite = bool(np.isfinite(np.frombuffer(piece, self.dtype, usable // self.dtype.itemsize)).all())
        self.rest = piece[usable:]


#: Deflate cannot compress by more than about 1032:1, so inline data needs at least this share of its size.
MAX_COMPRESSION_RATIO = 1100
_BYTES_PER_COMPONENT = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
                        sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
                        sitk.sitkFloat32: 4, sitk.sitkFloat64: 8}
_INTEGER_PIXEL_IDS = frozenset(_BYTES_PER_COMPONENT) - {sitk.sitkFloat32, sitk.sitkFloat64}


def _check_inline_data_size(path: str, reader: sitk.ImageFileReader, name: str) -> None:
    """Refuse, before anything is allocated, a NRRD/MetaImage whose header claims more voxels than its inline
    data could hold even compressed (ITK's NRRD reader would first allocate and zero the whole volume)."""
    lower = path.lower()
    if not lower.endswith((".nrrd", ".mha")):
        return
    with open(path, "rb") as handle:
        header = handle.read(1 << 16).decode("latin-1").lower()
    detached = (re.search(r"^data ?file\s*:", header, re.MULTILINE) if lower.endswith(".nrrd")
                else not re.search(r"^elementdatafile\s*=\s*local\s*$", header, re.MULTILINE))
    if detached:
        return
    voxels = int(np.prod(reader.GetSize(), dtype=np.int64)) * reader.GetNumberOfComponents()
    needed = voxels * _BYTES_PER_COMPONENT.get(reader.GetPixelID(), 1)
    if needed > MAX_COMPRESSION_RATIO * os.path.getsize(path):
        raise ImageReadError(f"{name}: header claims {needed} bytes of image data but the file is only "
                             f"{os.path.getsize(path)} bytes (truncated or forged)")


def _gzip_length(path: str, enough: int, name: str, feed=None) -> int:
    """Decompressed length of a gzip file, counted up to `enough` bytes (a cut stream just ends early);
    `feed(bytes)` sees the decompressed data in order (one pass serves the length and the finiteness checks)."""
    import zlib

    inflater, available, members = zlib.decompressobj(wbits=31), 0, 0
    with open(path, "rb") as handle:
        while available < enough and (data := handle.read(1 << 20)):
            while data and available < enough:
                try:
                    out = inflater.decompress(data, 1 << 24)
                except zlib.error as exc:
                    if members:  # padding or junk after a complete member: gzip readers ignore it too
                        return available
                    raise ImageReadError(f"{name}: corrupt compressed data ({exc})") from None
                available += len(out)
                if feed is not None:
                    feed(out)
                data = inflater.unconsumed_tail
                if inflater.eof:  # a gzip file may hold several members
                    data, inflater, members = inflater.unused_data + data, zlib.decompressobj(wbits=31), members + 1
    return available


def _read_dicom_folder(path: str, name: str) -> sitk.Image:
    # GDCM prints a multi-line warning for a folder without DICOM files; the error below says it in one line.
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path)
    except RuntimeError:
        series = ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    if not series:
        raise ImageReadError(f"{name}: folder holds no DICOM series")
    if len(series) > 1:
        raise ImageReadError(f"{name}: folder holds {len(series)} DICOM series; give a folder with exactly one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, series[0])
    _check_slice_spacing(files, name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{name}: DICOM series could not be read ({first_error_line(exc)})") from None


def _check_slice_spacing(files: tuple[str, ...], name: str) -> None:
    """Refuse a series with a missing, duplicated or unreadable slice: read as it is, it would become a shorter
    volume with one averaged, wrong slice spacing. Positions come from each file's header (no pixels read)."""
    if len(files) < 3:
        return
    positions, normal = [], None
    for file in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
            position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                row_col = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(row_col[:3], row_col[3:])
        except (RuntimeError, ValueError, IndexError):
            raise ImageReadError(f"{name}: slice {os.path.basename(file)} is unreadable or lacks its position; "
                                 "the series cannot be assembled safely") from None
        positions.append(float(np.dot(position, normal)))
    order = np.argsort(positions, kind="stable")
    steps = np.diff(np.asarray(positions)[order])
    typical = float(np.median(steps))
    for index, step in enumerate(steps):
        if typical <= 0 or abs(step - typical) > 0.1 * typical:
            kind = "a duplicated slice" if step < 0.1 * max(typical, 1e-6) else "a missing slice or an irregular gap"
            first, second = (os.path.basename(files[order[i]]) for i in (index, index + 1))
            raise ImageReadError(f"{name}: {kind} between {first} and {second} ({step:.3g} mm where the series "
                                 f"steps {typical:.3g} mm)")


def first_error_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__
