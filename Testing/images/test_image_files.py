"""reactkd.images.image_files: which data files a header names, and the rule they follow."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ImageReadError
from reactkd.images.image_files import MAX_DATA_FILES, data_file_names, file_type_problem, image_files


def test_inline_images_name_no_data_file(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    for name in ("a.nrrd", "b.mha", "c.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
        assert image_files(tmp_path / name) == [tmp_path / name]
    # after a NRRD header's blank line comes its data: text there is no field
    (tmp_path / "d.nrrd").write_bytes(b"NRRD0004\ntype: float\n\ndata file: /etc/hostname\n")
    assert data_file_names(tmp_path / "d.nrrd") == []


def test_nifti_pairs_and_spaced_names(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32)), str(tmp_path / "pair.hdr"))
    assert image_files(tmp_path / "pair.hdr") == [tmp_path / "pair.hdr", tmp_path / "pair.img"]
    assert data_file_names(tmp_path / "pair.img") == ["pair.hdr"]
    (tmp_path / "s.mhd").write_text("NDims = 3\n\nElementDataFile = my scan.raw\n")  # a blank line, then the field
    assert data_file_names(tmp_path / "s.mhd") == ["my scan.raw"]


@pytest.mark.parametrize("field,match", [("f%03d.raw 1 9 0", "is unusable"), (f"f%d.raw 0 {MAX_DATA_FILES} 1", "is unusable"),
                                         ("f%0999999999d.raw 0 1 1", "is unusable"),
                                         ("f%s%s.raw 0 2 1", "not a number pattern"), ("%c 9999999 9999999 1", "not a number")])
def test_broken_or_huge_patterns_are_refused(field, match, tmp_path):
    (tmp_path / "p.nhdr").write_text(f"NRRD0005\ndata file: {field}\n")
    with pytest.raises(ImageReadError, match=match):
        image_files(tmp_path / "p.nhdr", name="--mask")


def test_file_type_problem_never_opens_the_path(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "plain").write_bytes(b"1")
    assert [file_type_problem(tmp_path / n) for n in ("fifo", "plain", "absent")] == ["a FIFO", None, "not found"]
    assert file_type_problem(tmp_path) == "a folder"


def test_a_dicom_folder_entry_linked_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series/sub").mkdir()  # folders inside are skipped, as GDCM's scan skips them
    (tmp_path / "series/slice1.dcm").write_bytes(b"1")
    assert image_files(tmp_path / "series") == [tmp_path / "series/slice1.dcm"]
    (tmp_path / "elsewhere.dcm").write_bytes(b"2")
    (tmp_path / "series/slice2.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    with pytest.raises(ImageReadError, match="'slice2.dcm' points outside the folder"):
        image_files(tmp_path / "series", name="--ct")
