"""report.html: one self-contained page per classified case, for the reader who has no Slicer at hand.

Everything is inside the file (pictures as data: URIs, inline CSS, no script), and the page's Content Security
Policy forbids every request, so opening it leaks nothing and needs nothing. Pictures are drawn here with NumPy
(CT in a soft-tissue window, the Grad-CAM heat map, tumour outlines) in display orientation (radiological:
the patient's right on the left), not through VTK: the report costs tens of milliseconds, not seconds.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.atomic import write_text_atomic
from reactkd.inference.result import ClassificationResult
from reactkd.vocabulary import INTENDED_USE, TUMOUR_CODE

REPORT_FILE = "report.html"
WINDOW_HU = (40.0, 400.0)  # level, width: soft tissue
SLICES = 3
HEAT_FLOOR = 0.05
CROP_MARGIN = 10  # voxels around the liver in the cropped slices
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _axial(image: sitk.Image) -> np.ndarray:
    """(z, y, x) array of `image` in LPS order, so that a slice shows the patient's right on the left. An
    axis-aligned grid (every CT short of a tilted gantry) is only viewed transposed and flipped, never
    copied: reorienting a full-size CT and its maps cost 0.7 s."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    axes = np.argmax(np.abs(direction), axis=1)  # the index axis along each of L, P, S
    if not np.allclose(np.abs(direction[np.arange(3), axes]), 1.0, atol=1e-6) or len(set(axes.tolist())) < 3:
        return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))  # oblique: a copy, resampled by ITK
    view = sitk.GetArrayViewFromImage(image).transpose([2 - axes[2], 2 - axes[1], 2 - axes[0]])
    flips = tuple(out for out, lps in enumerate((2, 1, 0)) if direction[lps, axes[lps]] < 0)
    return np.flip(view, flips) if flips else view  # a view: valid while the caller's image lives


def _picture(ct: np.ndarray, heat: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """RGB uint8 of one slice: windowed CT, heat blended where it is high, tumour outline in cyan."""
    level, width = WINDOW_HU
    gray = np.clip((ct.astype(np.float32) - level + width / 2) / width, 0, 1)
    # Grad-CAM is sparse (most voxels near 0): full colour from half its range up, nothing below 0.05.
    h = np.clip((heat.astype(np.float32) - HEAT_FLOOR) / (0.5 - HEAT_FLOOR), 0, 1)
    hot = np.stack([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(3 * h - 2, 0, 1)], axis=-1)
    alpha = (0.7 * h)[..., None]
    rgb = gray[..., None] * (1 - alpha) + hot * alpha
    inner = tumour.copy()
    inner[1:-1, 1:-1] = tumour[1:-1, 1:-1] & tumour[:-2, 1:-1] & tumour[2:, 1:-1] & tumour[1:-1, :-2] & tumour[1:-1, 2:]
    rgb[tumour & ~inner] = (0.0, 1.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tumour_slices(mask: np.ndarray, count: int = SLICES) -> tuple[int | None, list[int]]:
    """(the axial slice of largest tumour area, up to `count` slices spread through the tumours, it included)."""
    area = np.count_nonzero(mask.reshape(len(mask), -1) == TUMOUR_CODE, axis=1)
    bearing = np.flatnonzero(area)
    if not len(bearing):
        return None, []
    largest = int(np.argmax(area))
    spread = [largest] + [int(bearing[round(q * (len(bearing) - 1))]) for q in (0.2, 0.8, 0.5)]
    return largest, sorted(dict.fromkeys(spread[:count + 1]))[:count]


def case_pictures(ct: sitk.Image, mask: sitk.Image, heat: sitk.Image) -> list[tuple[str, str]]:
    """(caption, data URI) pictures: the whole slice of largest tumour area, then slices through the tumours
    cropped to the liver (with a margin)."""
    ct_a, mask_a, heat_a = _axial(ct), _axial(mask), _axial(heat)
    largest, slices = tumour_slices(mask_a)
    if largest is None:
        return []
    organ = np.any(mask_a > 0, axis=0)  # the liver's in-plane extent over all slices
    rows, cols = np.flatnonzero(organ.any(axis=1)), np.flatnonzero(organ.any(axis=0))
    box = (slice(max(rows[0] - CROP_MARGIN, 0), rows[-1] + CROP_MARGIN + 1),
           slice(max(cols[0] - CROP_MARGIN, 0), cols[-1] + CROP_MARGIN + 1))

    def picture(z: int, crop=(slice(None), slice(None))) -> str:
        return _png(_picture(ct_a[z][crop], heat_a[z][crop], mask_a[z][crop] == TUMOUR_CODE))

    return [(f"slice {largest + 1} of {len(mask_a)} (largest tumour area)", picture(largest)),
            *((f"slice {z + 1}, liver region", picture(z, box)) for z in slices)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(result: ClassificationResult, pictures: list[tuple[str, str]]) -> str:
    """The page as text."""
    names = result.class_names
    probabilities = _table(["grade", "probability"], [[n, f"{result.probabilities[n]:.3f}"] for n in names])
    what_if = result.what_if or {}
    if what_if.get("rows"):
        comparison = _table(["inputs", "grade", *names], [[r["inputs"], r["grade"], *(f"{r['probabilities'][n]:.3f}"
                                                                                  for n in names)]
                                                          for r in what_if["rows"]])
    else:
        comparison = f"<p>{html.escape(what_if.get('unavailable', 'not computed'))}</p>"
    missing = what_if.get("missing_modalities") or []
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings) or "<li>none</li>"
    ood = result.out_of_distribution or {}
    ood_text = (f"score {ood['score']:.2f} (threshold {ood['threshold']:.2f}"
                f"{', above it' if ood.get('flagged') else ''})" if "score" in ood else ood.get("unavailable", "-"))
    kinds: dict[str, int] = {}
    for node in result.graph.get("nodes", []):
        kinds[node["kind"]] = kinds.get(node["kind"], 0) + 1
    top = sorted(result.graph.get("nodes", []), key=lambda node: -node["importance"])[:5]
    graph = _table(["region", "kind", "volume (mL)", "importance"],
                   [[n["label"], n["kind"], f"{n['volume_ml']:.1f}", f"{n['importance']:.2f}"] for n in top])
    figures = "".join(f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                      "</figcaption></figure>" for caption, uri in pictures)
    model = result.model
    refer = result.prediction_set is not None and len(result.prediction_set) > 1
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{POLICY}">
<title>REACT-KD: {html.escape(result.grade)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}}table{{border-collapse:collapse;
margin:.5em 0}}td,th{{border:1px solid #bbb;padding:.2em .6em;text-align:left}}.grade{{font-size:1.6em;
font-weight:bold}}.refer{{color:#a33;font-weight:bold}}figure{{display:inline-block;margin:.3em}}img{{max-width:28em;
image-rendering:pixelated}}figure:not(:first-of-type) img{{width:16em}}.use{{border:1px solid #a33;padding:.5em}}</style></head><body>
<h1>REACT-KD case report</h1>
<p class="use">{html.escape(model.get('intended_use') or INTENDED_USE)}</p>
<p class="grade">Grade: {html.escape(result.grade)}</p>
<p class="{'refer' if refer else 'set'}">{html.escape(result.prediction_set_text)}</p>
{probabilities}
<h2>What if: the grade on each input combination</h2>{comparison}
<p>Modalities the model reads that were not given: {html.escape(', '.join(missing) or 'none')}</p>
<h2>Warnings</h2><ul>{warnings}</ul>
<p>Out-of-distribution: {html.escape(ood_text)}</p>
<h2>Where the model looked (Grad-CAM; tumour outlines in cyan)</h2>{figures or '<p>no tumour slice</p>'}
<h2>Region graph</h2><p>{html.escape(', '.join(f'{n} {k}' for k, n in kinds.items()) or 'no nodes')};
{len(result.graph.get('edges', []))} edges. The five most important regions:</p>{graph}
<h2>Model</h2>{_table(['name', 'version', 'weights sha256'], [[model.get('name', '?'), model.get('version', '?'),
                                                               model.get('sha256', '?')]])}
<p>Inputs: {html.escape(', '.join(result.inputs))}; device {html.escape(result.device)}.</p>
</body></html>
"""


def write_case_report(result: ClassificationResult, path: str | Path, ct: sitk.Image, mask: sitk.Image) -> Path:
    """Write report.html for `result` (its maps on the grid of `ct`)."""
    write_text_atomic(path, report_html(result, case_pictures(ct, mask, result.attention_gradcam)))
    return Path(path)
