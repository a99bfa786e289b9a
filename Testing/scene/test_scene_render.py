"""Offscreen slice rendering through Slicer's displayable managers: pixels are checked, not just files.

No skip for a missing GL: CI installs Mesa EGL, so a broken GL must fail here loudly.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.scene

SIZE = (192, 160)  # width, height: small and non-square to catch row/column mix-ups


@pytest.fixture(scope="module")
def rendered(scene_case):
    from reactkd.scene import (
        SliceRenderer,
        add_region_graph,
        add_segmentation,
        add_volume,
        apply_ct_window,
        create_headless_scene,
        show_attention,
    )

    context = create_headless_scene()
    scene = context.scene
    ct_node = add_volume(scene, scene_case.ct, "CT")
    apply_ct_window(ct_node)
    attention_node = add_volume(scene, scene_case.attention, "attention")
    show_attention(scene, ct_node, attention_node, opacity=0.5)
    add_segmentation(scene, scene_case.labels, ct_node)
    add_region_graph(scene, scene_case.graph)
    renderer = SliceRenderer(context, "Red", SIZE)
    renderer.position(ras_point=scene_case.tumour_ras)
    yield context, renderer
    renderer.close()
    context.close()


def patch(pixels, column_row, half=2):
    column, row = (int(round(v)) for v in column_row)
    return pixels[row - half:row + half + 1, column - half:column + half + 1].reshape(-1, 3).astype(float).mean(axis=0)


def warmth(rgb):
    return (rgb[0] + rgb[1]) / 2 - rgb[2]


def test_heat_map_at_tumour_and_grey_ct_elsewhere(rendered, scene_case):
    _, renderer = rendered
    pixels = renderer.render_array(show_segmentation=False, show_markups=False, show_models=False)
    assert pixels.shape == (SIZE[1], SIZE[0], 3) and pixels.dtype == np.uint8
    assert pixels.std() > 5  # not blank
    tumour = patch(pixels, renderer.ras_to_pixel(scene_case.tumour_ras))
    liver = patch(pixels, renderer.ras_to_pixel(scene_case.far_liver_ras))
    assert warmth(tumour) > 25, tumour  # inferno's yellow blended over grey
    assert np.ptp(liver) < 3 and 100 < liver.mean() < 180, liver  # grey CT (60 HU in W400/L40: ~140)
    # The heat blob is centred where the attention peaks (checks the whole geometry chain). Inferno's
    # warmth peaks on a ring below its maximum, so compare the blob's centroid, not its argmax.
    warm = warmth(np.moveaxis(pixels.astype(float), 2, 0)) > 15
    rows, columns = np.nonzero(warm)
    assert 20 < rows.size < 0.2 * warm.size
    expected_column, expected_row = renderer.ras_to_pixel(scene_case.tumour_ras)
    assert abs(columns.mean() - expected_column) <= 1.5 and abs(rows.mean() - expected_row) <= 1.5


def test_foreground_opacity_zero_leaves_grey_ct(rendered, scene_case):
    _, renderer = rendered
    try:
        renderer.set_layers(None, foreground_opacity=0.0)
        pixels = renderer.render_array(show_segmentation=False, show_markups=False, show_models=False)
    finally:
        renderer.set_layers(None, foreground_opacity=0.5)
    tumour = patch(pixels, renderer.ras_to_pixel(scene_case.tumour_ras))
    assert np.ptp(tumour) < 3 and tumour.mean() > 140  # tumour (110 HU) is brighter grey than the liver


def test_segment_outlines_markups_and_edges_are_drawn(rendered, scene_case):
    _, renderer = rendered
    bare = renderer.render_array(show_segmentation=False, show_markups=False, show_models=False)
    changed = {}
    for name in ("segmentation", "markups", "models"):
        flags = {f"show_{other}": other == name for other in ("segmentation", "markups", "models")}
        changed[name] = np.any(renderer.render_array(**flags) != bare, axis=2)
    assert changed["segmentation"].sum() > 50
    # Outlines, not fills: the tumour centre keeps its heat colour.
    tumour_column, tumour_row = (int(round(v)) for v in renderer.ras_to_pixel(scene_case.tumour_ras))
    assert not changed["segmentation"][tumour_row, tumour_column]
    assert changed["markups"][tumour_row - 2:tumour_row + 3, tumour_column - 2:tumour_column + 3].any()
    # The edge tumour -> liver lies (projected) along the segment between their pixel positions.
    nodes = scene_case.graph["nodes"]
    start, end = (np.array(renderer.ras_to_pixel(nodes[i]["centroid_ras"])) for i in (0, 2))
    middle = np.round((start + end) / 2).astype(int)
    assert changed["models"][middle[1] - 1:middle[1] + 2, middle[0] - 1:middle[0] + 2].any()


def test_png_written_atomically_matches_render_and_frames_are_fast(rendered, scene_case, tmp_path):
    import vtk
    from vtk.util import numpy_support

    _, renderer = rendered
    path = renderer.render_png(tmp_path / "view.png")
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["view.png"]
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    width, height, _ = reader.GetOutput().GetDimensions()
    from_file = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars()).reshape(height, width, -1)
    np.testing.assert_array_equal(from_file[::-1, :, :3], renderer.render_array())
    start = time.perf_counter()
    for offset in range(3):
        renderer.position(slice_offset=scene_case.tumour_ras[2] + offset)
        renderer.render_array()
    per_frame = (time.perf_counter() - start) / 3
    assert per_frame < 1.0, per_frame  # measured ~0.02 s at this size; generous for a shared CI core


def test_render_slice_png_one_call(scene_case, tmp_path):
    import vtk
    from vtk.util import numpy_support

    from reactkd.scene import add_volume, create_headless_scene, render_slice_png

    context = create_headless_scene()
    try:
        ct_node = add_volume(context.scene, scene_case.ct, "CT")
        path = render_slice_png(context, tmp_path / "out" / "sagittal.png", background=ct_node,
                                ras_point=scene_case.tumour_ras, size=(96, 64), orientation="Sagittal")
        with pytest.raises(ValueError, match="orientation"):
            render_slice_png(context, tmp_path / "x.png", orientation="Oblique")
    finally:
        context.close()
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    assert reader.GetOutput().GetDimensions()[:2] == (96, 64)
    pixels = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars())
    assert pixels.std() > 5
    assert not (tmp_path / "x.png").exists()


def test_missing_gl_raises_a_clear_error_instead_of_crashing():
    import os
    import subprocess
    import sys

    # Hide every EGL vendor (glvnd) and Mesa's drivers in a child process: no usable GL remains.
    env = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent.json", LIBGL_DRIVERS_PATH="/nonexistent",
               VTK_DEFAULT_OPENGL_WINDOW="")
    code = ("from reactkd.scene.render import RenderingUnavailableError, offscreen_render_window\n"
            "try:\n    offscreen_render_window()\nexcept RenderingUnavailableError as exc:\n"
            "    print('unavailable:', exc)\nelse:\n    print('rendered')\n")
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "unavailable:" in child.stdout and "apt-get install" in child.stdout
