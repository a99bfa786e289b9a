"""A full disk (issue 15, class 1): ITK's writers leave a truncated file without raising. `write_image`
checks what was written before renaming it into place, so a short file is an `error:` line, the target
never appears (or keeps its previous content) and no temporary file stays. Truncation is simulated by
cutting the file the real writer produced, at several places, for every format."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ImageWriteError
from reactkd.images import writers as reactkd_io
from reactkd.images.writers import write_image

FORMATS = [(".nii.gz", True), (".nii", False), (".nrrd", True), (".nrrd", False), (".mha", True), (".mha", False),
           (".nhdr", False)]


@pytest.fixture
def image():
    values = (np.random.default_rng(1).random((16, 20, 24)) * 1000).astype(np.float32)
    values[:, :5] = 0  # compressible part, as maps and masks have
    return sitk.GetImageFromArray(values)


def truncating_writer(monkeypatch, keep):
    real = sitk.WriteImage

    def write_then_cut(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(keep(size))

    monkeypatch.setattr(reactkd_io.sitk, "WriteImage", write_then_cut)


@pytest.mark.parametrize("suffix, compress", FORMATS)
@pytest.mark.parametrize("cut", ["half", "last-bytes", "empty"])
def test_a_truncated_image_is_refused_and_never_renamed_into_place(suffix, compress, cut, image, tmp_path,
                                                                   monkeypatch):
    target = tmp_path / f"out{suffix}"
    target.write_bytes(b"previous content")
    keep = {"half": lambda n: n // 2, "last-bytes": lambda n: n - 7, "empty": lambda n: 0}[cut]
    truncating_writer(monkeypatch, keep)
    with pytest.raises(ImageWriteError, match="not written completely"):
        write_image(image, target, compress=compress)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary or orphan data file


@pytest.mark.parametrize("suffix, compress", [(".nhdr", False), (".nhdr", True), (".mhd", False), (".mhd", True)])
def test_a_detached_header_names_its_final_data_file_and_a_rewrite_leaves_no_orphan(suffix, compress, image,
                                                                                   tmp_path):
    target = tmp_path / f"map{suffix}"
    write_image(image, target, compress=compress)
    write_image(sitk.Cast(image, sitk.sitkInt16), target, compress=compress)  # another pixel type, same name

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and target.name in names  # the header and one data file, no hidden leftovers
    data_file = next(n for n in names if n != target.name)
    assert data_file.startswith("map.") and data_file in target.read_text(errors="replace")
    again = sitk.ReadImage(str(target))
    assert again.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again),
                                  sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkInt16)))


@pytest.mark.parametrize("suffix, compress", FORMATS)
def test_complete_files_pass_the_check_for_every_pixel_type(suffix, compress, image, tmp_path):
    for cast in (sitk.sitkFloat32, sitk.sitkInt16, sitk.sitkUInt8):
        out = write_image(sitk.Cast(image, cast), tmp_path / f"ok{suffix}", compress=compress)
        assert sitk.ReadImage(str(out)).GetSize() == image.GetSize()


def test_a_full_disk_in_the_cli_is_one_error_line(image, tmp_path, monkeypatch, capsys):
    from reactkd.cli.main import main

    write_image(image, tmp_path / "ct.nii.gz")
    truncating_writer(monkeypatch, lambda n: n // 3)
    code = main(["simulate-ldct", "--ct", str(tmp_path / "ct.nii.gz"), "--dose", "0.5", "--out",
                 str(tmp_path / "low.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "not written completely (is the disk full?)" in err and "Traceback" not in err
    assert not (tmp_path / "low.nii.gz").exists()


def test_a_full_disk_under_any_python_write_is_one_error_line(tmp_path, monkeypatch, capsys):
    import errno

    from reactkd import atomic
    from reactkd.cli.main import main

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "write_bytes_atomic", no_space)
    code = main(["synth", "--out", str(tmp_path / "cohort"), "--cases", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "No space left on device" in err and "Traceback" not in err
