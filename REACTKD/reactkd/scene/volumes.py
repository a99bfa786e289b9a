"""SimpleITK images <-> Slicer volume nodes, with geometry kept exactly (ITK LPS <-> Slicer RAS)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from reactkd.errors import GeometryError
from reactkd.images.geometry import Geometry

#: RAS = LPS_TO_RAS @ LPS (homogeneous); the matrix is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def numpy_to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            result.SetElement(row, col, float(matrix[row, col]))
    return result


def vtk_matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def add_volume(scene: slicer.vtkMRMLScene, image: sitk.Image, name: str,
               labelmap: bool = False, window_level: tuple[float, float] | None = None) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a 3D scalar image as a volume node (a label map volume node with `labelmap=True`).

    The voxel array is copied unchanged (same dtype; label maps are stored as uint8 when their values fit)
    and IJK-to-RAS = diag(-1, -1, 1, 1) @ IJK-to-LPS, so the node lies exactly where the image does.
    `window_level` fixes the display window (grey colours) instead of Slicer's automatic one, whose histogram
    of a full-size CT costs about 0.3 s.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(f"{name}: expected a 3D scalar image")
    array = sitk.GetArrayFromImage(image)
    if labelmap and array.dtype != np.uint8 and array.size and array.min() >= 0 and array.max() <= 255:
        array = array.astype(np.uint8)
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    node.SetIJKToRASMatrix(numpy_to_vtk_matrix(Geometry.of(image).index_to_ras()))
    if window_level is not None and not labelmap:
        display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        display.AutoWindowLevelOff()
        display.SetWindowLevel(*window_level)
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        node.SetAndObserveDisplayNodeID(display.GetID())
    node.SetAndObserveImageData(_image_data(array))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _image_data(array: np.ndarray) -> vtk.vtkImageData:
    """vtkImageData (origin 0, spacing 1: geometry lives in the node's IJK-to-RAS) from a (z, y, x) array."""
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def volume_array(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's voxels as a (z, y, x) numpy array that shares memory with the node."""
    image_data = node.GetImageData()
    if image_data is None:
        raise GeometryError(f"{node.GetName()}: volume has no image data")
    nx, ny, nz = image_data.GetDimensions()
    scalars = image_data.GetPointData().GetScalars()
    return numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx)


def volume_geometry(node: slicer.vtkMRMLVolumeNode) -> Geometry:
    """Voxel grid of a volume node in ITK terms (LPS origin and direction), ignoring parent transforms."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_lps = LPS_TO_RAS @ vtk_matrix_to_numpy(matrix)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    size = node.GetImageData().GetDimensions()
    return Geometry(tuple(int(s) for s in size), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in ijk_to_lps[:3, 3]), tuple(float(d) for d in direction.ravel()))


def volume_to_image(node: slicer.vtkMRMLVolumeNode) -> sitk.Image:
    """Copy a volume node to a SimpleITK image on the same grid (inverse of `add_volume`).

    Refuses a node under a parent transform (harden it first): the grid would not be where Slicer shows it.
    """
    if node.GetParentTransformNode() is not None:
        raise GeometryError(f"{node.GetName()}: volume is under a transform; harden the transform first")
    image = sitk.GetImageFromArray(np.array(volume_array(node)))
    return volume_geometry(node).apply_to(image)
