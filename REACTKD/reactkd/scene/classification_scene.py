"""One call that turns a classification into `overview.png` and `scene.mrb` (what `reactkd classify` writes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

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

CT_WINDOW_LEVEL = (400.0, 40.0)  # abdomen soft tissue


@dataclass(frozen=True)
class ClassificationSceneFiles:
    overview_png: Path
    scene_mrb: Path


def write_classification_scene(out_dir: str | os.PathLike, ct: sitk.Image, attention_maps: Mapping[str, sitk.Image],
                               labels: sitk.Image, graph: Mapping, result: Mapping,
                               pets: Mapping[str, sitk.Image] | None = None, shown_attention: str | None = None,
                               size: tuple[int, int] = (512, 512), opacity: float = 0.5) -> ClassificationSceneFiles:
    """Build a headless scene with the CT, PETs, attention maps (one shown as heat map over the CT), the
    liver/tumour segmentation, region graph and result table; views centred on the largest tumour.
    Write `overview.png` (axial slice through that tumour) and `scene.mrb` into `out_dir`, both atomically.

    `attention_maps` maps node names (e.g. "attention_cbam") to maps in [0, 1] on the CT grid or on a box of it
    (``labels`` too: zeros outside their box are not stored, and Slicer shows a box where it lies);
    `shown_attention` picks the one shown (default: the first). `pets` maps node names to PET images.
    """
    if not attention_maps:
        raise ValueError("at least one attention map is needed")
    shown_attention = shown_attention or next(iter(attention_maps))
    out_dir = Path(out_dir)
    context = create_headless_scene()
    try:
        scene = context.scene
        ct_node = add_volume(scene, ct, "CT", window_level=CT_WINDOW_LEVEL)
        apply_ct_window(ct_node, *CT_WINDOW_LEVEL)
        for name, pet in (pets or {}).items():
            add_volume(scene, pet, name)
        attention_nodes = {name: add_volume(scene, image, name, window_level=(1.0, 0.5))
                           for name, image in attention_maps.items()}
        show_attention(scene, ct_node, attention_nodes[shown_attention], opacity=opacity)
        add_segmentation(scene, labels, ct_node)
        add_region_graph(scene, graph)
        add_results_table(scene, result)
        centre = largest_tumour_centroid_ras(graph)
        overview = render_slice_png(context, out_dir / "overview.png", ras_point=centre, size=size)
        center_views_on(scene, centre)  # after the (fitted) overview, so the saved views open on the tumour
        scene_file = save_mrb(scene, out_dir / "scene.mrb")
    finally:
        context.close()
    return ClassificationSceneFiles(overview, scene_file)
