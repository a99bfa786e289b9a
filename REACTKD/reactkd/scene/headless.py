"""A Slicer MRML scene with its logics, built without the Slicer application (Qt-free).

Inside 3D Slicer use `slicer.mrmlScene` directly; every other function in `reactkd.scene` takes the scene as
an argument and works in both places. Only the offscreen renderer needs the `SceneContext` made here (for
its application logic and slice logics).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import slicer
import vtk

#: Slicer's standard slice views and the orientation each shows by default.
SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


@dataclass
class SceneContext:
    """A headless MRML scene with the logics that Slicer's modules would normally provide."""

    scene: slicer.vtkMRMLScene
    app_logic: slicer.vtkSlicerApplicationLogic
    color_logic: slicer.vtkSlicerColorLogic
    volumes_logic: slicer.vtkSlicerVolumesLogic
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic
    markups_logic: slicer.vtkSlicerMarkupsLogic
    slice_logics: dict[str, slicer.vtkMRMLSliceLogic] = field(default_factory=dict)
    #: Private folder for the scene's cache (reading an .mrb unpacks there); removed with the context.
    cache_folder: str = ""

    def slice_logic(self, view_name: str) -> slicer.vtkMRMLSliceLogic:
        """Slice logic of a standard view ("Red", "Yellow", "Green")."""
        try:
            return self.slice_logics[view_name]
        except KeyError:
            raise ValueError(f"unknown slice view {view_name!r}; use one of {sorted(self.slice_logics)}") from None

    def close(self) -> None:
        """Detach the logics and empty the scene (frees the image data it holds)."""
        for logic in self.slice_logics.values():
            logic.SetMRMLScene(None)
        self.app_logic.GetSliceLogics().RemoveAllItems()
        self.scene.Clear(True)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None
        if self.cache_folder:
            shutil.rmtree(self.cache_folder, ignore_errors=True)


@contextlib.contextmanager
def vtk_warnings_silenced() -> Iterator[None]:
    """Silence VTK's global warning output for set-up steps whose warnings are expected headless."""
    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


def _wire(logic, app_logic, scene, module_name: str):
    logic.SetMRMLApplicationLogic(app_logic)
    logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic(module_name, logic)
    return logic


def create_headless_scene(register_globals: bool = True) -> SceneContext:
    """Build a scene with application, colour, volumes, segmentations and markups logics and the three
    standard slice views (Red axial, Yellow sagittal, Green coronal).

    With `register_globals` (default) and outside the Slicer application it also sets `slicer.mrmlScene`
    so `slicer.util` helpers work, and `slicer.modules` to a stand-in exposing `slicer.modules.<name>.logic()`
    for volumes, segmentations, markups and colors. Inside Slicer the application's globals are never
    replaced (use `slicer.mrmlScene` there rather than a headless scene).
    """
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetSingletonTag("default")
    scene.AddNode(crosshair)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkSlicerColorLogic()
    # Without the application there are no colour files to find; the built-in tables are still created,
    # so the "no ColorFiles directory" messages are only noise.
    with vtk_warnings_silenced():
        _wire(color_logic, app_logic, scene, "Colors")
    app_logic.SetColorLogic(color_logic)
    volumes_logic = _wire(slicer.vtkSlicerVolumesLogic(), app_logic, scene, "Volumes")
    segmentations_logic = _wire(slicer.vtkSlicerSegmentationsModuleLogic(), app_logic, scene, "Segmentations")
    markups_logic = _wire(slicer.vtkSlicerMarkupsLogic(), app_logic, scene, "Markups")

    # Reading a scene bundle (.mrb) unpacks it into the remote-cache folder of the data I/O manager.
    cache_folder = tempfile.mkdtemp(prefix="reactkd-scene-")
    cache_manager = slicer.vtkCacheManager()
    cache_manager.SetRemoteCacheDirectory(cache_folder)
    data_io_manager = slicer.vtkDataIOManager()
    data_io_manager.SetCacheManager(cache_manager)
    scene.SetCacheManager(cache_manager)
    scene.SetDataIOManager(data_io_manager)

    context = SceneContext(scene, app_logic, color_logic, volumes_logic, segmentations_logic, markups_logic,
                           cache_folder=cache_folder)
    weakref.finalize(context, shutil.rmtree, cache_folder, True)
    for view_name, orientation in SLICE_VIEWS.items():
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_node = slice_logic.AddSliceNode(view_name)
        slice_node.SetOrientation(orientation)
        slice_logic.GetSliceCompositeNode()  # created now so overlays can configure every view
        app_logic.GetSliceLogics().AddItem(slice_logic)
        context.slice_logics[view_name] = slice_logic

    if register_globals and not hasattr(slicer, "app"):
        slicer.mrmlScene = scene
        slicer.modules = _module_stand_ins(context)
    return context


def _module_stand_ins(context: SceneContext) -> types.SimpleNamespace:
    """`slicer.modules.<name>.logic()` as the Slicer application provides it (slicer.util relies on it)."""

    def module(logic) -> types.SimpleNamespace:
        return types.SimpleNamespace(logic=lambda: logic)

    return types.SimpleNamespace(volumes=module(context.volumes_logic),
                                 segmentations=module(context.segmentations_logic),
                                 markups=module(context.markups_logic),
                                 colors=module(context.color_logic))
