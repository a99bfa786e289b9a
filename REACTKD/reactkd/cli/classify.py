"""`reactkd classify`: read the inputs, classify, write the output folder, print a short summary."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import SimpleITK as sitk

from reactkd.errors import GeometryError, MaskError, ReactKDError, one_line
from reactkd.images.dicom_seg import read_dicom_seg
from reactkd.images.geometry import Geometry
from reactkd.images.masks import label_codes
from reactkd.images.readers import read_image
from reactkd.inference.batch import RESULTS_FILE, grade_manifest
from reactkd.inference.classifier import Classifier
from reactkd.inference.outputs import OUTPUT_FILES, write_outputs
from reactkd.inference.result import probabilities_text
from reactkd.output_paths import check_output


def label_map_from_masks(liver: sitk.Image, tumour: sitk.Image) -> sitk.Image:
    """Combine binary liver and tumour masks (same grid) into a 0/1/2 label map; tumour wins."""
    if not Geometry.of(liver).same_as(Geometry.of(tumour), tol=1e-3):
        raise GeometryError("--liver and --tumor masks are on different grids")
    liver_arr = sitk.GetArrayViewFromImage(liver) > 0.5
    tumour_arr = sitk.GetArrayViewFromImage(tumour) > 0.5
    if not tumour_arr.any():
        raise MaskError("--tumor mask is empty")
    labels = label_codes(liver_arr, tumour_arr)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(liver)
    return image


def read_case(args: argparse.Namespace) -> tuple[sitk.Image, sitk.Image, sitk.Image | None, sitk.Image | None]:
    ct = read_image(args.ct, name="--ct")
    if args.mask is not None:
        mask = read_image(args.mask, name="--mask", labels=True)
    elif args.seg is not None:
        mask = read_dicom_seg(args.seg, ct, name="--seg")
    else:
        if args.tumor is None:
            raise ReactKDError("--liver needs --tumor (or give a label map with --mask)")
        mask = label_map_from_masks(read_image(args.liver, name="--liver", labels=True),
                                    read_image(args.tumor, name="--tumor", labels=True))
    fdg = read_image(args.pet_fdg, name="--pet-fdg") if args.pet_fdg else None
    act = read_image(args.pet_act, name="--pet-act") if args.pet_act else None
    return ct, mask, fdg, act


def run_classify(args: argparse.Namespace) -> int | None:
    """One case (--ct with --mask, --seg, or --liver and --tumor) or every case of --manifest."""
    if args.manifest is not None:
        if args.mask or args.seg or args.liver or args.tumor or args.pet_fdg or args.pet_act:
            raise ReactKDError("--manifest takes the images from the manifest; leave out --mask, --seg, --liver, "
                               "--tumor, --pet-fdg and --pet-act")
        return _run_manifest(args)
    if args.mask is None and args.seg is None and args.liver is None:
        raise ReactKDError("classify needs --mask, --seg (DICOM SEG) or --liver with --tumor with --ct")
    check_output(args.out, folder=True, names=OUTPUT_FILES,
                 inputs=[args.ct, args.mask, args.seg, args.liver, args.tumor, args.pet_fdg, args.pet_act, args.model])
    ct, mask, fdg, act = read_case(args)
    classifier = Classifier(args.model, device=args.device, set_level=args.set_level)
    result = classifier.classify(ct, mask, fdg, act)
    write_outputs(result, args.out, ct, mask, fdg, act, render=not args.no_render)
    print(summary_text(result, args.out))


def summary_text(result, out_dir) -> str:
    lines = [f"grade: {result.grade} ({probabilities_text(result.probabilities)})", *result.trust_lines(),
             f"model: {result.model['name']} {result.model['version']} on {result.device}; "
             f"inputs: {', '.join(result.inputs)}",
             "timings (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items()),
             f"outputs: {out_dir}"]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _run_manifest(args: argparse.Namespace) -> int:
    """Every case of --manifest: progress lines (or JSON events), a summary; a failed case makes it end with
    one `error:` line and exit 2 (raised, so `main` prints it like every other error)."""
    start = time.monotonic()

    def report(event: dict) -> None:
        if args.progress == "json":
            print(json.dumps(event), flush=True)
        elif args.progress != "none":  # case ids and messages come from the manifest: one line each
            detail = event.get("grade") or event.get("error")
            print(one_line(f"[{event['index']}/{event['total']}] {event['case_id']}: {event['status']} ({detail})"),
                  flush=True)

    graded, rows = grade_manifest(args.manifest, args.out, args.model, args.device, not args.no_render, report,
                                  set_level=args.set_level)
    failed = [row for row in rows if row.get("status") != "ok"]
    table = Path(args.out) / RESULTS_FILE
    if args.progress == "json":
        print(json.dumps({"event": "done", "graded": graded, "failed": len(failed), "results": str(table)}), flush=True)
    else:
        print(one_line(f"graded {graded} case(s) now, {len(rows) - len(failed) - graded} kept from an earlier run, "
                       f"{len(failed)} failed, in {time.monotonic() - start:.0f} s; table: {table}"))
    if failed:
        names = ", ".join(row["case_id"] for row in failed[:5]) + (" ..." if len(failed) > 5 else "")
        raise ReactKDError(f"{len(failed)} of {len(rows)} case(s) failed ({names}); reasons in {table}")
    return 0
