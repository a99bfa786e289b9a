"""DICOM SEG masks (reactkd.images.dicom_seg): a SEG written by highdicom from a synthetic case reads back as
its label map on the CT grid, by the SEG's frame geometry; its segments are named as the Slicer module names
them; `classify --seg` grades as `--mask` does."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ImageReadError, MaskError
from reactkd.images.dicom_seg import read_dicom_seg
from synthetic_images import make_case

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402


def ct_datasets(ct: sitk.Image) -> list:
    """The CT as single-frame DICOM CT datasets (one per slice), with the geometry highdicom needs."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    direction = np.array(ct.GetDirection()).reshape(3, 3)
    hu = sitk.GetArrayFromImage(ct)
    datasets = []
    for k in range(ct.GetDepth()):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyID, ds.SeriesNumber = "CT", "p1", "Synthetic^Case", "1", 1
        ds.InstanceNumber, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = k + 1, "20000101", "000000", ""
        ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", "O"
        ds.ImagePositionPatient = [float(v) for v in ct.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [ct.GetSpacing()[1], ct.GetSpacing()[0]]  # row spacing, column spacing
        ds.SliceThickness = ct.GetSpacing()[2]
        ds.Rows, ds.Columns = ct.GetHeight(), ct.GetWidth()
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.round(hu[k]).astype(np.int16).tobytes()
        datasets.append(ds)
    return datasets


def segment(number: int, label: str, meaning: tuple[str, str]) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept(*meaning[:1], "SCT", meaning[1]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)


LIVER_TYPE, MASS_TYPE, VEIN_TYPE = ("10200004", "Liver"), ("4147007", "Mass"), ("32764006", "Portal vein")


def write_seg(path, ct: sitk.Image, masks: dict[str, np.ndarray], types: dict[str, tuple[str, str]] | None = None,
              fractional: bool = False):
    """A SEG of `ct` whose segments are `masks` (label -> boolean (z, y, x) array), empty frames left out."""
    sources = ct_datasets(ct)
    labels = list(masks)
    types = types or {}
    descriptions = [segment(i + 1, label, types.get(label, LIVER_TYPE)) for i, label in enumerate(labels)]
    pixels = np.stack([masks[label] for label in labels], axis=-1)
    kind = hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels.astype(np.float32 if fractional else np.uint8), segmentation_type=kind,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="REACT-KD tests",
        manufacturer_model_name="synthetic", software_versions="1", device_serial_number="1")
    seg.save_as(path)
    return path


@pytest.fixture(scope="module")
def case():
    ct, mask, _ = make_case(shape_zyx=(18, 30, 34), spacing=(1.3, 1.1, 2.2), origin=(-12.0, 31.0, 77.0),
                            tumour_centre_zyx=(9, 14, 18), tumour_radius=4, seed=3)
    labels = sitk.GetArrayFromImage(mask)
    return ct, mask, labels


def test_a_seg_on_the_ct_grid_reads_back_as_its_label_map(case, tmp_path):
    ct, _, labels = case
    path = write_seg(tmp_path / "seg.dcm", ct, {"Portal vein": np.zeros_like(labels, bool),
                                                "Liver": labels >= 1, "Mass": labels == 2},
                     {"Mass": MASS_TYPE, "Portal vein": VEIN_TYPE})
    read = read_dicom_seg(path, ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), labels)
    assert read.GetSize() == ct.GetSize() and np.allclose(read.GetDirection(), ct.GetDirection())


def test_segments_are_placed_by_their_frames_on_another_ct_grid(case, tmp_path):
    """The SEG's frames sit on the CT they came from; a CT on a finer grid still gets them where they are."""
    ct, mask, labels = case
    path = write_seg(tmp_path / "seg.dcm", ct, {"liver": labels == 1, "tumour 1": labels == 2})
    # Half the spacing, shifted a quarter voxel: no fine voxel centre lies half-way between two coarse ones.
    origin = ct.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, -0.25))
    fine = sitk.Resample(ct, [2 * s for s in ct.GetSize()], sitk.Transform(), sitk.sitkLinear, origin,
                         [s / 2 for s in ct.GetSpacing()], ct.GetDirection(), 0.0, ct.GetPixelID())
    expected = sitk.Resample(mask, fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    read = read_dicom_seg(path, fine)
    same = np.mean(sitk.GetArrayFromImage(read) == sitk.GetArrayFromImage(expected))
    assert same == 1.0 and set(np.unique(sitk.GetArrayFromImage(read))) == {0, 1, 2}


def test_fractional_segments_and_coded_types_name_liver_and_tumour(case, tmp_path):
    ct, _, labels = case
    path = write_seg(tmp_path / "seg.dcm", ct, {"Segment_1": labels >= 1, "Segment_2": labels == 2},
                     {"Segment_2": MASS_TYPE}, fractional=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_seg(path, ct)), labels)


@pytest.mark.parametrize(("names", "message"), [
    (["Liver", "Portal vein"], "no tumour segment"),
    (["Spleen", "lesion"], "no liver segment"),
])
def test_a_seg_without_a_liver_or_tumour_segment_is_refused(case, tmp_path, names, message):
    ct, _, labels = case
    path = write_seg(tmp_path / "seg.dcm", ct, dict(zip(names, (labels >= 1, labels == 2))),
                     {name: VEIN_TYPE for name in names})
    with pytest.raises(MaskError, match=message):
        read_dicom_seg(path, ct)


def test_a_seg_of_another_place_is_refused(case, tmp_path):
    ct, _, labels = case
    path = write_seg(tmp_path / "seg.dcm", ct, {"Liver": labels >= 1, "Mass": labels == 2}, {"Mass": MASS_TYPE})
    elsewhere = sitk.Image(ct)
    elsewhere.SetOrigin([v + 500.0 for v in ct.GetOrigin()])
    with pytest.raises(MaskError, match="empty where the CT is"):
        read_dicom_seg(path, elsewhere)


def test_files_that_are_not_a_seg_give_one_line(case, tmp_path):
    ct, _, _ = case
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not dicom at all" * 10)
    image = ct_datasets(ct)[0]
    image.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    for path, message in ((garbage, "not a readable DICOM"), (tmp_path / "ct.dcm", "not a DICOM SEG"),
                          (tmp_path / "absent.dcm", "cannot read"), (tmp_path, "not a regular file")):
        with pytest.raises(ImageReadError, match=message) as caught:
            read_dicom_seg(path, ct)
        assert "\n" not in str(caught.value)



def test_without_highdicom_a_seg_is_one_line_naming_what_to_install(case, tmp_path, monkeypatch):
    """Slicer 5.10 has no highdicom (installing it would replace Slicer's pydicom): say so, do not crash."""
    ct = case[0]
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    with pytest.raises(ImageReadError, match="needs highdicom"):
        read_dicom_seg(tmp_path / "absent.dcm", ct)

@pytest.mark.slow
def test_classify_with_seg_gives_the_grade_and_probabilities_of_the_mask(case, tmp_path):
    from reactkd.cli.main import main
    from reactkd.images.writers import write_image

    ct, mask, labels = case
    write_image(ct, tmp_path / "ct.nrrd")
    write_image(mask, tmp_path / "mask.nrrd")
    write_seg(tmp_path / "seg.dcm", ct, {"Liver": labels >= 1, "Mass": labels == 2}, {"Mass": MASS_TYPE})
    results = {}
    for option, name in (("--mask", "mask.nrrd"), ("--seg", "seg.dcm")):
        out = tmp_path / option.strip("-")
        assert main(["classify", "--ct", str(tmp_path / "ct.nrrd"), option, str(tmp_path / name), "--out", str(out),
                     "--no-render", "--device", "cpu"]) == 0
        results[option] = json.loads((out / "result.json").read_text())
    assert results["--seg"]["grade"] == results["--mask"]["grade"]
    assert results["--seg"]["probabilities"] == pytest.approx(results["--mask"]["probabilities"], abs=1e-6)


def test_a_grading_manifest_takes_one_of_mask_and_seg_per_row(tmp_path):
    from reactkd.cohort.manifest import read_grading_manifest

    for name in ("ct.nrrd", "mask.nrrd", "seg.dcm"):
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,ct,seg,mask\nsegmented,ct.nrrd,seg.dcm,\nlabelled,ct.nrrd,,mask.nrrd\n"
                        "both,ct.nrrd,seg.dcm,mask.nrrd\nneither,ct.nrrd,,\n", encoding="utf-8")
    cases = {case.case_id: case for case in read_grading_manifest(manifest)}
    assert cases["segmented"].problem is None and cases["segmented"].paths["seg"] == tmp_path / "seg.dcm"
    assert cases["labelled"].problem is None and cases["labelled"].paths["seg"] is None
    assert "both mask and seg" in cases["both"].problem and "no mask" in cases["neither"].problem
    manifest.write_text("case_id,ct,seg\nonly_seg,ct.nrrd,seg.dcm\n", encoding="utf-8")  # no mask column at all
    assert read_grading_manifest(manifest)[0].problem is None


@pytest.mark.slow
def test_a_seg_column_grades_as_the_mask_column(case, tmp_path):
    import csv

    from reactkd.images.writers import write_image
    from reactkd.inference.batch import RESULTS_FILE, grade_manifest

    ct, mask, labels = case
    write_image(ct, tmp_path / "ct.nrrd")
    write_image(mask, tmp_path / "mask.nrrd")
    write_seg(tmp_path / "seg.dcm", ct, {"Liver": labels >= 1, "Neoplasm 1": labels == 2})
    (tmp_path / "cases.csv").write_text("case_id,ct,mask,seg\nby_mask,ct.nrrd,mask.nrrd,\nby_seg,ct.nrrd,,seg.dcm\n",
                                        encoding="utf-8")
    graded, _ = grade_manifest(tmp_path / "cases.csv", tmp_path / "out", device="cpu", render=False)
    with open(tmp_path / "out" / RESULTS_FILE, encoding="utf-8", newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert graded == 2 and rows["by_seg"]["status"] == rows["by_mask"]["status"] == "ok"
    assert rows["by_seg"]["grade"] == rows["by_mask"]["grade"]
    assert all(rows["by_seg"][key] == rows["by_mask"][key] for key in rows["by_mask"] if key.startswith("p_"))
