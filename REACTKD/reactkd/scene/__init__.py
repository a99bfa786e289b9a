"""Scene layer: classification results as Slicer MRML nodes, offscreen slice rendering and scene bundles.

This is the only part of `reactkd` that imports `slicer` and `vtk` (from the `slicer-core` wheel outside
Slicer, or Slicer's own inside it); it never imports Qt. The same functions serve the REACTKD GUI module
(with `slicer.mrmlScene`) and `reactkd classify` (with a headless scene).

Typical headless use (what `reactkd classify` does)::

    from reactkd import scene as rs
    ctx = rs.create_headless_scene()                       # scene + logics + Red/Yellow/Green views
    ct_node = rs.add_volume(ctx.scene, ct_image, "CT")     # exact geometry: IJK-to-RAS = diag(-1,-1,1,1) IJK-to-LPS
    rs.apply_ct_window(ct_node)                            # W 400 / L 40 HU
    att_node = rs.add_volume(ctx.scene, attention_image, "attention")
    rs.show_attention(ctx.scene, ct_node, att_node, opacity=0.5)        # "REACTKD Inferno" heat table
    seg_node = rs.add_segmentation(ctx.scene, label_image, ct_node)     # segments "liver", "tumour"
    points_node, edges_node = rs.add_region_graph(ctx.scene, graph)     # graph.json layout
    rs.add_results_table(ctx.scene, result)                             # columns class, probability
    centre = rs.largest_tumour_centroid_ras(graph)
    rs.center_views_on(ctx.scene, centre)
    rs.render_slice_png(ctx, out / "overview.png", ras_point=centre)    # Red axial view, offscreen (EGL)
    rs.save_mrb(ctx.scene, out / "scene.mrb")
    ctx.close()

or all of it in one call: `write_classification_scene(out_dir, ct, attention, labels, graph, result)`.

Inside Slicer, call the same functions with `slicer.mrmlScene`; only `render_slice_png` / `SliceRenderer`
need a headless `SceneContext`. Offscreen rendering on Linux uses a vtkEGLRenderWindow (Mesa EGL; Debian
packages in `render.GL_PACKAGES`); a missing GL raises `RenderingUnavailableError` instead of crashing.
"""

from reactkd.scene.classification_scene import write_classification_scene
from reactkd.scene.colors import edge_color_table, heat_color_table, inferno_rgba
from reactkd.scene.headless import SLICE_VIEWS, SceneContext, create_headless_scene
from reactkd.scene.mrb import load_mrb, save_mrb
from reactkd.scene.overlays import (
    add_results_table,
    add_segmentation,
    apply_ct_window,
    center_views_on,
    largest_tumour_centroid_ras,
    segment_id_by_name,
    show_attention,
)
from reactkd.scene.region_graph import add_region_graph
from reactkd.scene.render import (
    RenderingUnavailableError,
    SliceRenderer,
    offscreen_render_window,
    render_slice_png,
)
from reactkd.scene.volumes import add_volume, volume_array, volume_geometry, volume_to_image

__all__ = [
    "SLICE_VIEWS", "SceneContext", "create_headless_scene",
    "add_volume", "volume_array", "volume_geometry", "volume_to_image",
    "heat_color_table", "edge_color_table", "inferno_rgba",
    "show_attention", "apply_ct_window", "add_segmentation", "segment_id_by_name", "add_results_table",
    "largest_tumour_centroid_ras", "center_views_on", "add_region_graph",
    "SliceRenderer", "render_slice_png", "offscreen_render_window", "RenderingUnavailableError",
    "save_mrb", "load_mrb", "write_classification_scene",
]
