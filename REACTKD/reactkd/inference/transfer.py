"""Volumes between the Slicer module and its `reactkd serve` child as raw buffers (torch-free).

Each volume travels as its voxels in a file of a private session folder (memory-backed /dev/shm when it has
room for the request, else the temporary folder) and its geometry in the JSON request, exact (JSON keeps
every double), so a transfer costs one copy each way instead of an image file's encoding, decoding and
verification. Attention maps come back as the box of the CT grid that holds their non-zero voxels.

A descriptor is ``{"raw": path, "dtype": "<f4", "size": [x, y, z], "spacing", "origin", "direction"}`` for
an input, ``{"raw": path, "dtype": "<f4", "index": [x, y, z], "size": [x, y, z]}`` for a map box.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from numbers import Real
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.atomic import atomic_path
from reactkd.errors import GeometryError, ImageReadError, ReactKDError
from reactkd.images.readers import MAX_VOXELS, first_error_line, validate_image

#: Private folders of inference sessions: reactkd-inference-<pid of the client process>-<random>.
SESSION_PREFIX = "reactkd-inference-"
#: Voxel types a raw volume may have (what SimpleITK scalar images hold), as numpy's byte-order-explicit names.
DTYPES = {np.dtype(name).str: np.dtype(name) for name in
          ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")}
#: Room kept free beside a request in a memory-backed folder (other programs share it).
HEADROOM_BYTES = 8 * 2**20


def session_roots() -> list[Path]:
    """Where request files go, best first: memory-backed /dev/shm (a full-size CT and two maps, a few hundred MB,
    live there for about a second), else the temporary folder."""
    shm = Path("/dev/shm")
    fast = [shm] if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else []
    return [*fast, Path(tempfile.gettempdir())]


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space in `folder`'s file system (0 when it cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def choose_root(needed: int, roots: list[Path] | None = None) -> Path:
    """The first of `roots` (default `session_roots`) with room for `needed` bytes plus headroom: a small
    /dev/shm (Docker's default is 64 MiB) falls back to the temporary folder instead of failing mid-write."""
    roots = session_roots() if roots is None else roots
    free = {root: free_bytes(root) for root in roots}
    for root in roots:
        if free[root] >= needed + HEADROOM_BYTES:
            return root
    shown = ", ".join(f"{root} {free[root] / 2**20:.0f} MiB" for root in roots)
    raise ReactKDError(f"not enough free space to pass the volumes to the inference process: it needs "
                       f"{needed / 2**20:.0f} MiB, free: {shown}")


def crop_to_liver(inputs: dict[str, sitk.Image | None], margin_mm: float) -> tuple[dict, tuple[int, int, int]]:
    """The CT and mask cut to the box `preprocess_case` crops them to (liver and tumour voxels grown by the
    model's `margin_mm`, `preprocessing.liver_box`), so only what the model reads travels: a few per cent of a
    full-size CT. Classifying the cut pair gives the same result to the last bit (the crop of a crop is
    itself); PET goes whole. Returns the inputs and the box's first voxel (x, y, z) on the CT grid; the inputs
    unchanged and (0, 0, 0) when the mask does not fit the CT or holds no organ (the server then says why)."""
    from reactkd.images.geometry import Geometry
    from reactkd.preprocessing import liver_box

    ct, mask = inputs.get("ct"), inputs.get("mask")
    if ct is None or mask is None or not Geometry.of(mask).same_as(Geometry.of(ct), tol=1e-3):
        return inputs, (0, 0, 0)
    labels = sitk.GetArrayViewFromImage(mask)
    if labels.max() <= 0:
        return inputs, (0, 0, 0)
    (x0, x1), (y0, y1), (z0, z1) = liver_box(labels, ct.GetSpacing(), margin_mm)
    if (x1 - x0, y1 - y0, z1 - z0) == tuple(ct.GetSize()):
        return inputs, (0, 0, 0)
    cut = {**inputs, "ct": ct[x0:x1, y0:y1, z0:z1], "mask": mask[x0:x1, y0:y1, z0:z1]}
    return cut, (x0, y0, z0)


def transfer_bytes(images: dict[str, sitk.Image | None]) -> int:
    """What a request with `images` (their CT first) puts into its session folder: the inputs and, at most,
    two float32 maps of the CT's size."""
    given = [image for image in images.values() if image is not None]
    inputs = sum(image.GetNumberOfPixels() * image.GetSizeOfPixelComponent() for image in given)
    ct = images.get("ct")
    return int(inputs + (2 * 4 * ct.GetNumberOfPixels() if ct is not None else 0))


def _write_buffer(array: np.ndarray, path: Path) -> None:
    """Write the voxels of `array` to a new file readable by this user only, checked for its full length. No
    fsync: the file is read back at once by the other process, and never outlives the session."""
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)
        with open(tmp, "wb", buffering=0) as handle:
            view = memoryview(np.ascontiguousarray(array)).cast("B")
            written = 0
            while written < len(view):
                written += handle.write(view[written:])
            if os.fstat(handle.fileno()).st_size != array.nbytes:
                raise ReactKDError(f"{path}: the transfer file was not written in full")


def write_volume(image: sitk.Image, path: str | os.PathLike) -> dict:
    """Write `image`'s voxels (its own pixel type) to `path`; returns the descriptor that names them."""
    path = Path(path)
    array = sitk.GetArrayViewFromImage(image)
    _write_buffer(array, path)
    return {"raw": str(path), "dtype": array.dtype.str, "size": list(image.GetSize()),
            "spacing": list(image.GetSpacing()), "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection())}


def write_box(array: np.ndarray, index: tuple[int, int, int], path: str | os.PathLike) -> dict:
    """Write a (z, y, x) float32 box whose first voxel is `index` (x, y, z) of the CT grid to `path`."""
    path = Path(path)
    box = np.ascontiguousarray(array, dtype=np.float32)
    _write_buffer(box, path)
    return {"raw": str(path), "dtype": box.dtype.str, "index": [int(i) for i in index],
            "size": [int(n) for n in box.shape[::-1]]}


def _ints(value, name: str, what: str, low: int) -> list[int]:
    if not (isinstance(value, list) and len(value) == 3 and
            all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)):
        raise ImageReadError(f"{name}: {what} must be 3 whole numbers >= {low}, got {value!r}")
    return value


def _reals(value, name: str, what: str, count: int) -> list[float]:
    if not (isinstance(value, list) and len(value) == count and
            all(isinstance(v, Real) and not isinstance(v, bool) for v in value)):
        raise GeometryError(f"{name}: {what} must be {count} numbers, got {value!r}")
    return [float(v) for v in value]


def _read_buffer(spec, name: str, shape_xyz: list[int]) -> np.ndarray:
    """The (z, y, x) voxels `spec` names, after checking it is a regular file of exactly their length."""
    dtype = DTYPES.get(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
    if dtype is None:
        raise ImageReadError(f"{name}: voxel type {spec.get('dtype')!r} is not one of {sorted(DTYPES)}")
    count = int(np.prod(shape_xyz, dtype=np.int64))
    if count > MAX_VOXELS:
        raise GeometryError(f"{name}: image of size {tuple(shape_xyz)} is too large (more than {MAX_VOXELS} voxels)")
    path = spec.get("raw")
    if not isinstance(path, str) or not path:
        raise ImageReadError(f"{name}: the request names no voxel file (raw)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO in its place must not hang the server
    except OSError as exc:
        raise ImageReadError(f"{name}: voxel file {path} cannot be opened ({exc.strerror})") from None
    with open(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{name}: voxel file {path} is not a regular file")
        if info.st_size != count * dtype.itemsize:
            raise ImageReadError(f"{name}: voxel file {path} holds {info.st_size} bytes, expected "
                                 f"{count * dtype.itemsize} for {tuple(shape_xyz)} {dtype.name} voxels")
        array = np.empty(shape_xyz[::-1], dtype=dtype)
        view, done = memoryview(array).cast("B"), 0
        while done < len(view):
            got = handle.readinto(view[done:])
            if not got:
                raise ImageReadError(f"{name}: voxel file {path} ended early (changed while being read)")
            done += got
    return array


def read_volume(spec, name: str, labels: bool = False) -> sitk.Image:
    """The image a `write_volume` descriptor names, checked as `read_image` checks a file: 3D, sane geometry,
    float32 and finite (label maps keep an integer type)."""
    if not isinstance(spec, dict):
        raise ImageReadError(f"{name}: expected an image file name or a raw volume description")
    size = _ints(spec.get("size"), name, "size", 1)
    geometry = {key: _reals(spec.get(key), name, key, count)
                for key, count in (("spacing", 3), ("origin", 3), ("direction", 9))}
    array = _read_buffer(spec, name, size)
    if not labels or array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise ImageReadError(f"{name}: contains NaN or infinite voxels")
    image = sitk.GetImageFromArray(array)
    try:
        image.SetSpacing(geometry["spacing"])
        image.SetOrigin(geometry["origin"])
        image.SetDirection(geometry["direction"])
    except RuntimeError as exc:  # ITK refuses a zero spacing or a singular direction itself
        raise GeometryError(f"{name}: invalid geometry ({first_error_line(exc)})") from None
    return validate_image(image, name)


def paste_box(spec, reference: sitk.Image, name: str, offset: tuple[int, int, int] = (0, 0, 0)) -> sitk.Image:
    """The float32 map on `reference`'s whole grid (zero outside the box) from a `write_box` descriptor whose
    index counts from `offset` of that grid (the corner of the crop that was sent, `crop_to_liver`)."""
    if not isinstance(spec, dict):
        raise ReactKDError(f"{name}: the inference process described no map")
    index, size = _ints(spec.get("index"), name, "index", 0), _ints(spec.get("size"), name, "size", 1)
    index = [i + o for i, o in zip(index, offset)]
    total = reference.GetSize()
    if any(i + n > t for i, n, t in zip(index, size, total)):
        raise ReactKDError(f"{name}: box {index} + {size} is not a box of the CT grid {list(total)}")
    if spec.get("dtype") != np.dtype(np.float32).str:
        raise ReactKDError(f"{name}: expected float32 voxels, got {spec.get('dtype')!r}")
    box = sitk.GetImageFromArray(_read_buffer(spec, name, size))
    if list(size) == list(total):
        full = box
    else:  # a zero image of the CT's size with the box pasted in: one full-size buffer, as `to_native` builds
        full = sitk.Image(total, sitk.sitkFloat32)
        (x, y, z), (nx, ny, nz) = index, size
        full[x:x + nx, y:y + ny, z:z + nz] = box
    full.CopyInformation(reference)
    return full
