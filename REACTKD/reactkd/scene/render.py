"""Offscreen rendering of a slice view the way Slicer draws it (blended volume layers, segment outlines,
markups and models through Slicer's slice displayable managers), to PNG.

On Linux the window is a vtkEGLRenderWindow (Mesa EGL, no display needed); set VTK_DEFAULT_OPENGL_WINDOW
(e.g. vtkOSOpenGLRenderWindow or vtkXOpenGLRenderWindow) to choose another; elsewhere VTK's default
offscreen window is used.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from reactkd.atomic import atomic_path
from reactkd.errors import ReactKDError
from reactkd.scene.headless import SLICE_VIEWS, SceneContext

#: Slice displayable managers registered for rendering (what a Slicer slice view shows besides volumes).
SLICE_DISPLAYABLE_MANAGERS = ("vtkMRMLModelSliceDisplayableManager", "vtkMRMLSegmentationsDisplayableManager2D",
                              "vtkMRMLMarkupsDisplayableManager")
#: Debian packages that provide headless EGL rendering with Mesa (llvmpipe).
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"
#: Display node classes that each `show_*` flag of `SliceRenderer.render` controls.
OVERLAY_CLASSES = {"segmentation": "vtkMRMLSegmentationDisplayNode", "markups": "vtkMRMLMarkupsDisplayNode",
                   "models": "vtkMRMLModelDisplayNode"}


class RenderingUnavailableError(ReactKDError):
    """No usable OpenGL (EGL) implementation for offscreen rendering."""


def offscreen_render_window() -> vtk.vtkRenderWindow:
    """An offscreen render window with a working OpenGL context, or RenderingUnavailableError.

    Checked up front because VTK without any GL library may crash rather than raise.
    """
    window_class = getattr(vtk, "vtkEGLRenderWindow", None)
    use_egl = (sys.platform.startswith("linux") and window_class is not None
               and not os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"))
    if use_egl:
        if ctypes.util.find_library("EGL") is None:
            raise RenderingUnavailableError(
                f"offscreen rendering needs libEGL (Debian/Ubuntu: apt-get install {GL_PACKAGES})")
        window = window_class()
    else:
        window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    if not window.SupportsOpenGL():
        raise RenderingUnavailableError(
            f"no usable OpenGL for offscreen rendering with {window.GetClassName()} "
            f"(Debian/Ubuntu: apt-get install {GL_PACKAGES})")
    return window


class SliceRenderer:
    """Offscreen renderer bound to one standard slice view of a headless scene ("Red" axial by default).

    Keep one instance to render several frames: the first frame compiles shaders (slow), later ones are fast.
    The view's slice and composite nodes are the scene's own, so what is rendered is what the saved scene shows.
    """

    def __init__(self, context: SceneContext, view_name: str = "Red", size: tuple[int, int] = (512, 512)):
        self.context = context
        self.slice_logic = context.slice_logic(view_name)
        self.slice_node = self.slice_logic.GetSliceNode()
        self.size = (int(size[0]), int(size[1]))
        self.window = offscreen_render_window()
        self.window.SetSize(*self.size)
        # As in Slicer's slice view: the blended volume layers (background, foreground, label) in a bottom
        # renderer, the displayable managers' props (outlines, markups, models) in a renderer on top.
        self.window.SetNumberOfLayers(2)
        self.image_renderer = vtk.vtkRenderer()
        self.image_renderer.SetLayer(0)
        self.renderer = vtk.vtkRenderer()
        self.renderer.SetLayer(1)
        for renderer in (self.image_renderer, self.renderer):
            renderer.GetActiveCamera().ParallelProjectionOn()
            self.window.AddRenderer(renderer)
        self.image_mapper = vtk.vtkImageMapper()
        self.image_mapper.SetColorWindow(255)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_renderer.AddViewProp(self.image_actor)
        # Widgets of the markups manager need an interactor; the generic one needs no windowing system.
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(context.app_logic)
        for manager in SLICE_DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.displayable_managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.displayable_managers.Initialize(factory, self.renderer)
        self.displayable_managers.SetMRMLDisplayableNode(self.slice_node)
        self.slice_logic.ResizeSliceNode(*self.size)

    def set_layers(self, background: slicer.vtkMRMLVolumeNode | None, foreground: slicer.vtkMRMLVolumeNode | None = None,
                   foreground_opacity: float | None = None) -> None:
        """Set the view's background / foreground volumes (None leaves a layer as it is)."""
        composite = self.slice_logic.GetSliceCompositeNode()
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
        if foreground_opacity is not None:
            composite.SetForegroundOpacity(foreground_opacity)

    def position(self, ras_point: Sequence[float] | None = None, slice_offset: float | None = None,
                 orientation: str | None = None, fit: bool = True) -> None:
        """Orient the slice, fit the field of view to the background volume, then move the slice plane
        through `ras_point` (the view stays fitted, not re-centred) or to `slice_offset` (mm)."""
        if orientation is not None and self.slice_node.GetOrientation() != orientation:
            if not self.slice_node.SetOrientation(orientation):
                raise ValueError(f"unknown slice orientation {orientation!r}")
        if fit:
            self.slice_logic.FitSliceToBackground(*self.size)
        if ras_point is not None:
            self.slice_node.JumpSliceByOffsetting(*(float(v) for v in ras_point))
        elif slice_offset is not None:
            self.slice_logic.SetSliceOffset(float(slice_offset))

    def render_array(self, show_segmentation: bool = True, show_markups: bool = True,
                     show_models: bool = True) -> np.ndarray:
        """Render the view and return its pixels, (height, width, 3) uint8, row 0 at the top."""
        hidden = [name for name, shown in (("segmentation", show_segmentation), ("markups", show_markups),
                                           ("models", show_models)) if not shown]
        # The slice logic replaces its output connection when layers change, so fetch it for every frame.
        self.image_mapper.SetInputConnection(self.slice_logic.GetImageDataConnection())
        with _hidden_in_slice_views(self.context.scene, [OVERLAY_CLASSES[name] for name in hidden]):
            self.window.Render()
            grabber = vtk.vtkWindowToImageFilter()
            grabber.SetInput(self.window)
            grabber.SetInputBufferTypeToRGB()
            grabber.ReadFrontBufferOff()
            grabber.Update()
        image = grabber.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
        return np.ascontiguousarray(pixels[::-1])

    def render_png(self, path: str | os.PathLike, **show_flags: bool) -> Path:
        """Render the view to a PNG file, written atomically."""
        pixels = self.render_array(**show_flags)
        return write_png(pixels, path)

    def ras_to_pixel(self, ras_point: Sequence[float]) -> tuple[float, float]:
        """(column, row) in the rendered image (row 0 at the top) of a RAS point on the current slice."""
        xy_to_ras = self.slice_node.GetXYToRAS()
        ras_to_xy = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(xy_to_ras, ras_to_xy)
        x, y, _, _ = ras_to_xy.MultiplyPoint([*(float(v) for v in ras_point), 1.0])
        return x, self.size[1] - 1 - y

    def close(self) -> None:
        """Release the GL context and detach the displayable managers from the scene."""
        self.displayable_managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()


def write_png(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 array as PNG atomically."""
    path = Path(path)
    height, width, channels = pixels.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width, height, 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(pixels[::-1]).reshape(-1, channels), deep=True)
    image.GetPointData().SetScalars(scalars)
    writer = vtk.vtkPNGWriter()
    writer.SetInputData(image)
    with atomic_path(path) as tmp:
        writer.SetFileName(str(tmp))
        writer.Write()
        if writer.GetErrorCode() or not tmp.stat().st_size:
            raise OSError(f"{path}: PNG could not be written")
        with open(tmp, "rb") as handle:  # a full disk truncates silently: a complete PNG ends with its IEND chunk
            handle.seek(max(tmp.stat().st_size - 8, 0))
            if handle.read(8) != b"IEND\xaeB`\x82":
                raise ReactKDError(f"{path}: the file was not written completely (is the disk full?)")
    return path


@contextmanager
def _hidden_in_slice_views(scene: slicer.vtkMRMLScene, display_classes: list[str]) -> Iterator[None]:
    """Temporarily hide display nodes of the given classes in 2D (restored afterwards)."""
    changed = []
    for class_name in display_classes:
        for i in range(scene.GetNumberOfNodesByClass(class_name)):
            display = scene.GetNthNodeByClass(i, class_name)
            if display.GetVisibility2D():
                display.SetVisibility2D(False)
                changed.append(display)
    try:
        yield
    finally:
        for display in changed:
            display.SetVisibility2D(True)


def render_slice_png(context: SceneContext, path: str | os.PathLike,
                     background: slicer.vtkMRMLVolumeNode | None = None,
                     foreground: slicer.vtkMRMLVolumeNode | None = None,
                     ras_point: Sequence[float] | None = None, slice_offset: float | None = None,
                     size: tuple[int, int] = (512, 512), orientation: str = "Axial",
                     foreground_opacity: float | None = None, show_segmentation: bool = True,
                     show_markups: bool = True, show_models: bool = True) -> Path:
    """Render one slice (through `ras_point`, or at `slice_offset` mm, else the centre) to a PNG.

    The view is Slicer's standard view of that orientation (Axial: Red, Sagittal: Yellow, Coronal: Green),
    fitted to the background volume; layers not given keep what the view's composite node holds (e.g. set by
    `show_attention`). For several frames keep a `SliceRenderer` instead (first frame compiles shaders).
    """
    view_name = {orient: view for view, orient in SLICE_VIEWS.items()}.get(orientation)
    if view_name is None:
        raise ValueError(f"unknown orientation {orientation!r}; use one of {sorted(SLICE_VIEWS.values())}")
    renderer = SliceRenderer(context, view_name, size)
    try:
        renderer.set_layers(background, foreground, foreground_opacity)
        renderer.position(ras_point, slice_offset)
        return renderer.render_png(path, show_segmentation=show_segmentation, show_markups=show_markups,
                                   show_models=show_models)
    finally:
        renderer.close()
