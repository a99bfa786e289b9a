"""The baseline of the pictures row in bench_classify: overview.png + scene.mrb as `classify` wrote them before
issue 26 (the float CT, both attention maps and the label map on the whole CT grid, Slicer's automatic window
for every volume, no case report), composed from the scene layer's own functions."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def previous_scene_outputs(result, out_dir: Path, ct: sitk.Image, mask: sitk.Image) -> None:
    from reactkd.scene.headless import create_headless_scene
    from reactkd.scene.mrb import save_mrb
    from reactkd.scene.overlays import (
        add_results_table,
        add_segmentation,
        apply_ct_window,
        center_views_on,
        largest_tumour_centroid_ras,
        show_attention,
    )
    from reactkd.scene.region_graph import add_region_graph
    from reactkd.scene.render import render_slice_png
    from reactkd.scene.volumes import add_volume

    context = create_headless_scene()
    try:
        scene = context.scene
        ct_node = add_volume(scene, ct, "CT")
        apply_ct_window(ct_node)
        nodes = {name: add_volume(scene, getattr(result, name), name) for name in ("attention_gradcam", "attention_cbam")}
        show_attention(scene, ct_node, nodes["attention_gradcam"], opacity=0.5)
        add_segmentation(scene, sitk.Cast(mask, sitk.sitkUInt8), ct_node)
        add_region_graph(scene, result.graph)
        add_results_table(scene, result.to_json())
        centre = largest_tumour_centroid_ras(result.graph)
        render_slice_png(context, out_dir / "overview.png", ras_point=centre, size=(512, 512))
        center_views_on(scene, centre)
        save_mrb(scene, out_dir / "scene.mrb")
    finally:
        context.close()
