"""Voxel geometry of a 3D image (size, spacing, LPS origin, direction) and exact array <-> image copies.

Arrays follow SimpleITK's numpy convention: shape (z, y, x). Physical space is ITK's LPS (millimetres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from reactkd.errors import GeometryError


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


def to_numpy(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """Copy an image to a (z, y, x) array plus its geometry."""
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def from_numpy(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Build an image from a (z, y, x) array on the given geometry."""
    expected = tuple(reversed(geometry.size))
    if array.shape != expected:
        raise GeometryError(f"array shape {array.shape} does not match geometry size {geometry.size} (z, y, x = {expected})")
    return geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))


def nonzero_box(image: sitk.Image) -> sitk.Image:
    """The smallest sub-image holding every non-zero voxel (one voxel when there is none); same grid."""
    array = sitk.GetArrayViewFromImage(image)
    nonzero = [np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(index) == 0 for index in nonzero):
        return sitk.RegionOfInterest(image, [1, 1, 1], [0, 0, 0])
    start_zyx = [int(index[0]) for index in nonzero]
    size_zyx = [int(index[-1]) - begin + 1 for index, begin in zip(nonzero, start_zyx)]
    return sitk.RegionOfInterest(image, size_zyx[::-1], start_zyx[::-1])
