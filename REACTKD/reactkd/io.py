"""Image I/O with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series folders, with geometry kept exactly.

Arrays follow SimpleITK's numpy convention: shape (z, y, x). Physical space is ITK's LPS (millimetres).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import GeometryError, ImageReadError, ImageWriteError

#: Refuse images with more voxels than this before allocating them (a 1024^2 x 2000 CT is ~2.1e9).
MAX_VOXELS = 2_200_000_000
#: Plausible voxel spacing range in mm.
MIN_SPACING_MM, MAX_SPACING_MM = 1e-3, 100.0

WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DETACHED_SUFFIXES = (".nhdr", ".mhd")  # header and voxels in two files; the header names the data file


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a 3D image: size (x, y, z), spacing (mm), origin (mm, LPS) and 3x3 direction."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous continuous index (x, y, z, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def index_to_ras(self) -> np.ndarray:
        """4x4 IJK-to-RAS matrix as Slicer uses it (RAS = diag(-1, -1, 1) LPS)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.index_to_physical()

    def same_as(self, other: Geometry, tol: float = 1e-4) -> bool:
        return (self.size == other.size
                and np.allclose(self.spacing, other.spacing, atol=tol)
                and np.allclose(self.origin, other.origin, atol=tol)
                and np.allclose(self.direction, other.direction, atol=tol))


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


def read_image(path: str | os.PathLike, name: str | None = None, labels: bool = False) -> sitk.Image:
    """Read a 3D image from a file (NIfTI, NRRD, MetaImage, ...) or a DICOM series folder.

    Raises ImageReadError / GeometryError with a one-line message for anything unusable. Pixel values
    are returned as float32; NaN or infinite voxels are an error. With ``labels=True`` (label maps and
    masks) an integer pixel type is kept: no float copy and no finiteness pass, and `check_mask` can skip its
    whole-number pass (0.2 s on a 512 x 512 x 154 mask); float files are still returned as float32.
    """
    path = str(path)
    name = name or path
    if os.path.isdir(path):
        image = _read_dicom_folder(path, name)
    else:
        if not os.path.isfile(path):
            raise ImageReadError(f"{name}: file not found")
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{name}: file is empty")
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageReadError(f"{name}: not a readable image ({_first_line(exc)})") from None
        _check_header(name, reader)
        _check_nifti_data_length(path, reader, name)
        _check_inline_data_size(path, reader, name)
        try:
            image = reader.Execute()
        except (RuntimeError, MemoryError) as exc:
            raise ImageReadError(f"{name}: image data could not be read ({_first_line(exc)})") from None
    image = validate_image(image, name)
    if labels and image.GetPixelID() in _INTEGER_PIXEL_IDS:
        return image
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        raise ImageReadError(f"{name}: contains NaN or infinite voxels")
    return image


def _check_nifti_data_length(path: str, reader: sitk.ImageFileReader, name: str) -> None:
    """Refuse a truncated NIfTI file: ITK's NIfTI reader silently fills missing voxels with zeros."""
    if not path.lower().endswith((".nii", ".nii.gz")):
        return
    try:
        count = int(np.prod([int(reader.GetMetaData(f"dim[{i}]")) for i in range(1, int(reader.GetMetaData("dim[0]")) + 1)],
                            dtype=np.int64))
        needed = int(float(reader.GetMetaData("vox_offset"))) + count * int(reader.GetMetaData("bitpix")) // 8
    except (RuntimeError, ValueError):
        return  # header fields missing: leave the decision to ITK
    if not path.lower().endswith(".gz"):
        available = os.path.getsize(path)
    else:
        available = _gzip_length(path, needed, name)
    if available < needed:
        raise ImageReadError(f"{name}: file is truncated ({available} of {needed} bytes of image data)")


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


def _gzip_length(path: str, enough: int, name: str) -> int:
    """Decompressed length of a gzip file, counted up to `enough` bytes (a cut stream just ends early)."""
    import zlib

    inflater, available, members = zlib.decompressobj(wbits=31), 0, 0
    with open(path, "rb") as handle:
        while available < enough and (data := handle.read(1 << 20)):
            while data and available < enough:
                try:
                    available += len(inflater.decompress(data, 1 << 24))
                except zlib.error as exc:
                    if members:  # padding or junk after a complete member: gzip readers ignore it too
                        return available
                    raise ImageReadError(f"{name}: corrupt compressed data ({exc})") from None
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
        raise ImageReadError(f"{name}: DICOM series could not be read ({_first_line(exc)})") from None


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


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


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
        raise ImageWriteError(f"{shown}: could not be written ({_first_line(exc)})") from None
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


def to_numpy(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """Copy an image to a (z, y, x) array plus its geometry."""
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def from_numpy(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Build an image from a (z, y, x) array on the given geometry."""
    expected = tuple(reversed(geometry.size))
    if array.shape != expected:
        raise GeometryError(f"array shape {array.shape} does not match geometry size {geometry.size} (z, y, x = {expected})")
    return geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))


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
