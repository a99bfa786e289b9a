"""Unsafe text from inputs (issue 25, class 9): no results.csv cell reaches a spreadsheet as a formula (OWASP's
CSV-injection rule), and no input text makes the command line print a second, forged `error:` line."""

from __future__ import annotations

import csv
import errno

import pytest
from rel_support import assert_one_error_line, run_cli

from reactkd.errors import one_line
from reactkd.inference.batch import grade_manifest, neutralised

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _manifest(folder, case_dir, ids):
    with (folder / "m.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "ct", "mask"])
        writer.writerows([case_id, case_dir / "ct.nii.gz", case_dir / "mask.nii.gz"] for case_id in ids)
    return folder / "m.csv"


def test_no_results_cell_starts_a_formula_and_a_neutralised_case_is_still_kept(case_dir, tiny_package, tmp_path):
    # (a leading tab or CR cannot come from a manifest, whose cells are stripped: see the next test)
    ids = ["-7.e_1", '=HYPERLINK("http://x")', "@SUM(B2)", "+41", "-cmd|' /C calc'!A0"]
    manifest = _manifest(tmp_path, case_dir, ids)
    out = tmp_path / "graded"
    grade_manifest(manifest, out, tiny_package, "cpu")
    with (out / "results.csv").open(newline="") as handle:
        table = list(csv.reader(handle))
    cells = [cell for row in table for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    assert [row[0] for row in table[1:]] == ["'" + case_id for case_id in ids]
    assert table[1][1] == "ok" and {row[1] for row in table[2:]} == {"error"}  # only the first id is a folder name
    events = []
    grade_manifest(manifest, out, tiny_package, "cpu", progress=events.append)
    assert events[0]["status"] == "kept" and events[0]["case_id"] == ids[0]


def test_neutralising_is_idempotent_and_leaves_plain_text_alone():
    assert [neutralised(v) for v in ("-1", "'-1", "plain", "", None, 3.5, "/abs/path")] == \
        ["'-1", "'-1", "plain", "", "", "3.5", "/abs/path"]
    assert [neutralised(v) for v in ("\tz", "\rz", "+z")] == ["'\tz", "'\rz", "'+z"]
    assert all(neutralised(neutralised(v)) == neutralised(v) for v in ("=1", "@x", "\tz", "ok"))


def test_a_newline_in_a_case_id_gives_one_error_line(case_dir, tiny_package, tmp_path, capsys):
    manifest = _manifest(tmp_path, case_dir, ["bad\nerror: all 9 cases graded"])
    code, out, err = run_cli(["classify", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                              "--model", str(tiny_package), "--device", "cpu", "--no-render"], capsys)
    line = assert_one_error_line(code, err)
    assert "1 of 1 case(s) failed" in line and len(out.splitlines()) == 2  # one progress line, one summary


@pytest.mark.parametrize("command", [["synth"], ["classify", "--ct", "x.nii.gz", "--mask", "y.nii.gz"],
                                     ["simulate-ldct", "--ct", "x.nii.gz", "--dose", "0.5"]])
def test_a_control_character_in_out_gives_one_error_line(command, tmp_path, capsys):
    (tmp_path / "plain").write_text("a file, so nothing can be created below it")
    for spoof in ("\nerror: spoofed", "\r\x1b[1Aerror: spoofed", "\u2028error: spoofed", "\x85x\x0bv"):
        code, _, err = run_cli([*command, "--out", str(tmp_path / "plain" / f"sub{spoof}")], capsys)
        assert_one_error_line(code, err)
        assert "\x1b" not in err and "\r" not in err


def test_an_os_error_naming_a_path_with_a_newline_gives_one_error_line(tmp_path, capsys, monkeypatch):
    from reactkd.cli import synth

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x\nerror: forged"))

    monkeypatch.setattr(synth, "run_synth", full_disk)
    code, _, err = run_cli(["synth", "--out", str(tmp_path / "s")], capsys)
    assert "No space left" in assert_one_error_line(code, err)


def test_one_line_escapes_every_control_and_format_character():
    assert one_line("a\tb\x1b[2Jc\u202ed\x00") == "a\\tb\\x1b[2Jc\\u202ed\\x00"
    assert one_line("first\n\nsecond\r\nthird") == "first | second | third"
