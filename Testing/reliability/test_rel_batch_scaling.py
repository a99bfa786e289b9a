"""results.csv grows by appending (issue 25, class 10): grading N rows writes O(N) bytes and a constant number
of fsyncs, where rewriting the table after every row wrote O(N^2) bytes (4,000 rows of missing files took
about 50 s). Measured in bytes written and fsync calls, not in time, so the test cannot be flaky."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reactkd.inference.batch import grade_manifest

WCHAR = Path("/proc/self/io")


def _bytes_written() -> int:
    return int(next(line for line in WCHAR.read_text().splitlines() if line.startswith("wchar:")).split()[1])


def _grade_missing(folder: Path, rows: int, package, monkeypatch) -> tuple[int, int, int]:
    """(bytes the process wrote, fsync calls, size of results.csv) for `rows` rows whose files are missing."""
    folder.mkdir()
    (folder / "m.csv").write_text("case_id,ct,mask\n" + "".join(f"gone{i:05d},nothing/ct{i}.nrrd,nothing/m{i}.nrrd\n"
                                                                for i in range(rows)))
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    start = _bytes_written()
    graded, result_rows = grade_manifest(folder / "m.csv", folder / "out", package, "cpu")
    written = _bytes_written() - start
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert graded == 0 and len(result_rows) == rows and {r["status"] for r in result_rows} == {"error"}
    return written, len(fsyncs), (folder / "out" / "results.csv").stat().st_size


@pytest.mark.skipif(not WCHAR.is_file(), reason="needs Linux's /proc/self/io")
def test_grading_rows_of_missing_files_writes_linearly_in_the_rows(tiny_package, tmp_path, monkeypatch):
    _grade_missing(tmp_path / "warm", 3, tiny_package, monkeypatch)  # first model load, imports
    small = _grade_missing(tmp_path / "small", 170, tiny_package, monkeypatch)
    large = _grade_missing(tmp_path / "large", 340, tiny_package, monkeypatch)
    assert large[0] < 3 * small[0], (small, large)
    for written, fsyncs, table in (small, large):
        assert written < 4 * table + 200_000 and fsyncs <= 3, (written, fsyncs, table)
