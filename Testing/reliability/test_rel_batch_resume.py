"""An appended results.csv keeps the crash-safety guarantees (issue 25, class 10): a batch stopped at any row
(Ctrl-C, a full disk under the append, a line cut short by a crash, SIGKILL) leaves a table of fewer rows
than the manifest, never a complete-looking one, and the resumed run's table is byte-identical to an
uninterrupted run's."""

from __future__ import annotations

import csv
import errno
import signal
import subprocess
import sys

import pytest
from rel_support import CHILD_ENV

from reactkd.inference import batch
from reactkd.inference.batch import grade_manifest

ROWS = 4


@pytest.fixture(scope="module")
def graded(case_dir, tiny_package, tmp_path_factory):
    """A manifest of ROWS cases (the third one broken) and the table of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("resume")
    lines = [f"r{i},{case_dir}/ct.nii.gz,{case_dir / ('absent' if i == 2 else 'mask')}.nii.gz" for i in range(ROWS)]
    (folder / "m.csv").write_text("case_id,ct,mask\n" + "\n".join(lines) + "\n")
    grade_manifest(folder / "m.csv", folder / "reference", tiny_package, "cpu")
    return folder / "m.csv", (folder / "reference" / "results.csv").read_bytes()


def _rows(table) -> list[dict]:
    return list(csv.DictReader(table.open(newline="")))


@pytest.mark.parametrize("stop_at", range(1, ROWS))
def test_a_batch_stopped_at_any_row_resumes_to_the_uninterrupted_table(stop_at, graded, tiny_package, tmp_path):
    manifest, reference = graded
    out = tmp_path / "out"

    def stop(event):
        if event["index"] == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade_manifest(manifest, out, tiny_package, "cpu", progress=stop)
    assert [r["case_id"] for r in _rows(out / "results.csv")] == [f"r{i}" for i in range(stop_at)]
    grade_manifest(manifest, out, tiny_package, "cpu")
    assert (out / "results.csv").read_bytes() == reference


def test_a_full_disk_under_an_append_leaves_whole_rows_only(graded, tiny_package, tmp_path, monkeypatch):
    manifest, reference = graded
    out = tmp_path / "out"
    real_append = batch._ResultsTable.append
    calls = []

    def half_then_full(table, row):
        calls.append(row["case_id"])
        if len(calls) == 2:  # half of the line reaches the disk, then it is full
            table.file.write(table._lines([row]).encode()[:20])
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        real_append(table, row)

    monkeypatch.setattr(batch._ResultsTable, "append", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        grade_manifest(manifest, out, tiny_package, "cpu")
    monkeypatch.setattr(batch._ResultsTable, "append", real_append)
    grade_manifest(manifest, out, tiny_package, "cpu")
    assert (out / "results.csv").read_bytes() == reference


def test_a_line_cut_short_by_a_crash_is_graded_again(graded, tiny_package, tmp_path):
    manifest, reference = graded
    out = tmp_path / "out"
    grade_manifest(manifest, out, tiny_package, "cpu")
    table = out / "results.csv"
    cut = reference[:reference.rindex(b",") + 9]  # the last row without most of its fingerprint
    for partial in (cut, reference[:reference.rindex(b",")]):
        table.write_bytes(partial)
        events = []
        grade_manifest(manifest, out, tiny_package, "cpu", progress=events.append)
        assert [e["status"] for e in events][-1] == "ok" and table.read_bytes() == reference


def test_the_real_append_cuts_off_a_failed_write(tmp_path):
    table = batch._ResultsTable(tmp_path / "t.csv", ["case_id", "status"], [{"case_id": "k", "status": "ok"}])
    before = (tmp_path / "t.csv").read_bytes()

    class FullDisk:
        def __init__(self, file):
            self.real = file

        def tell(self):
            return self.real.tell()

        def fileno(self):
            return self.real.fileno()

        def write(self, data):
            self.real.write(bytes(data[:5]))
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    table.file, real = FullDisk(table.file), table.file
    with pytest.raises(OSError):
        table.append({"case_id": "n", "status": "ok"})
    table.file = real
    table.close(None)
    assert (tmp_path / "t.csv").read_bytes() == before


@pytest.mark.slow
def test_a_batch_killed_by_sigkill_resumes_to_the_uninterrupted_table(graded, tiny_package, tmp_path):
    manifest, reference = graded
    out = tmp_path / "out"
    command = [sys.executable, "-m", "reactkd", "classify", "--manifest", str(manifest), "--out", str(out),
               "--model", str(tiny_package), "--device", "cpu", "--no-render", "--progress", "json"]
    child = subprocess.Popen(command, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    child.stdout.readline()  # the first row is done: kill during the second
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(_rows(out / "results.csv")) < ROWS
    finished = subprocess.run(command, env=CHILD_ENV, capture_output=True, text=True)
    assert finished.returncode == 2 and "1 of 4 case(s) failed (r2)" in finished.stderr
    assert (out / "results.csv").read_bytes() == reference
