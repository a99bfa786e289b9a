"""Batch grading, `reactkd classify --manifest CSV --out DIR`: one results table plus each case's outputs,
progress per case, a bad case reported in its row without stopping the others, resumable after a stop,
refusal to mix two models' results."""

from __future__ import annotations

import csv
import json

import pytest

from model_packages import make_package
from reactkd.cli.main import main
from reactkd.cohort.manifest import read_grading_manifest
from reactkd.cohort.synth import generate_case
from reactkd.errors import ManifestError
from reactkd.images.readers import read_image
from reactkd.images.writers import write_image
from reactkd.inference.batch import grade_manifest


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("model") / "student", grid=(16, 32, 32))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    for index in range(3):
        case = generate_case(50 + index, index % 3, size="small")
        for name in ("ct", "mask", "pet_fdg"):
            write_image(getattr(case, name), folder / f"c{index}_{name}.nii.gz")
    return folder


def write_manifest(folder, rows, header="case_id,ct,mask,pet_fdg,label"):
    path = folder / "grade.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def results(out):
    return list(csv.DictReader((out / "results.csv").open()))


def test_grades_every_case_and_reports_bad_ones_without_stopping(cohort, student, tmp_path, capsys):
    manifest = write_manifest(cohort, ["a,c0_ct.nii.gz,c0_mask.nii.gz,c0_pet_fdg.nii.gz,well",
                                       "b,c1_ct.nii.gz,missing_mask.nii.gz,,",
                                       "../evil,c1_ct.nii.gz,c1_mask.nii.gz,,",
                                       f"c,{cohort / 'c2_ct.nii.gz'},c2_mask.nii.gz,,poor"])
    out = tmp_path / "graded"
    code = main(["classify", "--manifest", str(manifest), "--out", str(out), "--model", str(student),
                 "--device", "cpu", "--no-render", "--progress", "json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith("error: 2 of 4 case(s) failed (b, ../evil)")
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [(e["index"], e["status"]) for e in events[:-1]] == [(1, "ok"), (2, "error"), (3, "error"), (4, "ok")]
    assert events[-1] == {"event": "done", "graded": 2, "failed": 2, "results": str(out / "results.csv")}
    rows = results(out)
    assert [r["case_id"] for r in rows] == ["a", "b", "../evil", "c"]
    for row in (rows[0], rows[3]):
        probabilities = [float(row[f"p_{name}"]) for name in ("well", "moderate", "poor")]
        assert row["status"] == "ok" and abs(sum(probabilities) - 1) < 1e-4 and row["grade"] in ("well", "moderate", "poor")
        assert len(row["model_sha256"]) == 64 and (out / row["outputs"] / "result.json").is_file()
    assert rows[0]["inputs"] == "ct+pet_fdg" and rows[3]["inputs"] == "ct"
    assert "mask not found: missing_mask.nii.gz" in rows[1]["error"] and "folder name" in rows[2]["error"]
    assert not (out / "cases" / "b").exists() and not (tmp_path / "evil").exists()


def test_a_stopped_run_resumes_and_keeps_what_was_graded(cohort, student, tmp_path):
    manifest = write_manifest(cohort, [f"k{i},c{i}_ct.nii.gz,c{i}_mask.nii.gz,," for i in range(3)])
    out = tmp_path / "graded"
    seen = []

    def stop_after_first(event):
        seen.append(event)
        if len(seen) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade_manifest(manifest, out, student, "cpu", progress=stop_after_first)
    assert [r["case_id"] for r in results(out)] == ["k0"]
    first = (out / "cases/k0/result.json").stat().st_mtime_ns
    events = []
    graded, rows = grade_manifest(manifest, out, student, "cpu", progress=events.append)
    assert graded == 2 and [e["status"] for e in events] == ["kept", "ok", "ok"]
    assert (out / "cases/k0/result.json").stat().st_mtime_ns == first
    assert [r["status"] for r in results(out)] == ["ok"] * 3


def test_results_of_another_model_are_not_mixed(cohort, student, tmp_path, capsys):
    manifest = write_manifest(cohort, ["x,c0_ct.nii.gz,c0_mask.nii.gz,,"])
    out = tmp_path / "graded"
    assert main(["classify", "--manifest", str(manifest), "--out", str(out), "--model", str(student),
                 "--device", "cpu", "--no-render", "--progress", "none"]) == 0
    other = make_package(tmp_path / "other", grid=(16, 32, 32), seed=3)
    assert main(["classify", "--manifest", str(manifest), "--out", str(out), "--model", str(other),
                 "--device", "cpu", "--no-render"]) == 2
    assert "holds results of another model" in capsys.readouterr().err


def test_manifest_problems_that_concern_every_case_stop_at_once(cohort, tmp_path, capsys):
    with pytest.raises(ManifestError, match="duplicated column"):
        read_grading_manifest(write_manifest(cohort, ["a,c0_ct.nii.gz,c0_mask.nii.gz,c0_mask.nii.gz"],
                                             header="case_id,ct,mask,mask"))
    with pytest.raises(ManifestError, match="missing column"):
        read_grading_manifest(write_manifest(cohort, ["a,c0_ct.nii.gz"], header="case_id,ct"))
    assert main(["classify", "--manifest", str(cohort / "grade.csv"), "--out", str(tmp_path / "o"),
                 "--mask", "m.nii.gz"]) == 2
    assert "--manifest takes the images from the manifest" in capsys.readouterr().err
    assert main(["classify", "--ct", "x.nii.gz", "--out", str(tmp_path / "o")]) == 2
    assert "needs --mask" in capsys.readouterr().err


def test_a_folder_of_cases_is_graded_by_a_child_process(cohort, student, tmp_path):
    """What the module's "classify all" does: manifest from case folders, `reactkd classify --manifest` in a
    child process (here plain Python instead of PythonSlicer), one JSON event per case."""
    import shutil
    import sys

    from reactkd.cohort.manifest import manifest_from_folder
    from reactkd.inference.batch_client import start_batch

    cases = tmp_path / "cases"
    for index, suffix in ((0, ".nii.gz"), (1, ".nii.gz")):
        (cases / f"patient{index}").mkdir(parents=True)
        for name in ("ct", "mask"):
            shutil.copy(cohort / f"c{index}_{name}{suffix}", cases / f"patient{index}" / f"{name}{suffix}")
    (cases / "notes").mkdir()  # no images: not a case
    manifest = manifest_from_folder(cases, tmp_path / "out" / "manifest.csv")
    assert [r.case_id for r in read_grading_manifest(manifest)] == ["patient0", "patient1"]
    events = []
    handle = start_batch(manifest, tmp_path / "out", student, "cpu", events.append, python=sys.executable)
    assert handle.wait(timeout=300) == 0, handle.error_message
    assert [(e["event"], e.get("case_id")) for e in events] == [("case", "patient0"), ("case", "patient1"),
                                                                ("done", None)]
    assert [r["status"] for r in results(tmp_path / "out")] == ["ok", "ok"]
    with pytest.raises(Exception, match="no case folders"):
        manifest_from_folder(cases / "notes", tmp_path / "m.csv")


def test_a_rerun_grades_again_every_row_whose_inputs_changed(cohort, student, tmp_path):
    """Kept rows are keyed on what was graded (model, input paths, sizes, mtimes), not on the case id."""
    import os
    import shutil

    local = tmp_path / "images"
    shutil.copytree(cohort, local)
    rows = {"p": "c0", "q": "c1", "r": "c2"}
    manifest = write_manifest(local, [f"{case},{c}_ct.nii.gz,{c}_mask.nii.gz,," for case, c in rows.items()])
    out = tmp_path / "graded"
    grade_manifest(manifest, out, student, "cpu")
    first = {r["case_id"]: r for r in results(out)}
    assert first["p"]["ct"] == str(local / "c0_ct.nii.gz") and len(first["p"]["input_fingerprint"]) == 64
    # p and q swap their images; r's mask is rewritten in place with the same bytes (only its mtime moves)
    write_manifest(local, ["p,c1_ct.nii.gz,c1_mask.nii.gz,,", "q,c0_ct.nii.gz,c0_mask.nii.gz,,",
                           "r,c2_ct.nii.gz,c2_mask.nii.gz,,"])
    stat = (local / "c2_mask.nii.gz").stat()
    os.utime(local / "c2_mask.nii.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    events = []
    graded, _ = grade_manifest(manifest, out, student, "cpu", progress=events.append)
    assert graded == 3 and [e["status"] for e in events] == ["ok", "ok", "ok"]
    second = {r["case_id"]: r for r in results(out)}
    assert (second["p"]["grade"], second["p"]["p_poor"]) == (first["q"]["grade"], first["q"]["p_poor"])
    assert second["p"]["ct"] == str(local / "c1_ct.nii.gz") and second["r"]["mask"] == first["r"]["mask"]
    assert second["r"]["input_fingerprint"] != first["r"]["input_fingerprint"]
    events.clear()
    assert grade_manifest(manifest, out, student, "cpu", progress=events.append)[0] == 0
    assert [e["status"] for e in events] == ["kept"] * 3


def test_an_older_table_without_fingerprints_is_graded_again(cohort, student, tmp_path):
    manifest = write_manifest(cohort, ["old1,c1_ct.nii.gz,c1_mask.nii.gz,,"])
    out = tmp_path / "graded"
    grade_manifest(manifest, out, student, "cpu")
    row = results(out)[0]
    old_fields = ["case_id", "status", "grade", "p_well", "p_moderate", "p_poor", "model_sha256", "inputs",
                  "warnings", "error", "outputs"]
    (out / "results.csv").write_text(",".join(old_fields) + "\n" + ",".join(row[f] for f in old_fields) + "\n")
    events = []
    assert grade_manifest(manifest, out, student, "cpu", progress=events.append)[0] == 1
    assert events[0]["status"] == "ok" and results(out)[0]["input_fingerprint"] == row["input_fingerprint"]


def test_no_row_writes_over_an_input_of_another_row(cohort, student, tmp_path):
    """Every case folder is checked against the inputs of all rows before any work: an earlier row's CT
    lying where a later row writes an attention map refuses the later row, not the CT."""
    import shutil

    from reactkd.errors import ReactKDError

    out = tmp_path / "graded"
    held = out / "cases" / "later" / "attention_cbam.nrrd"
    held.parent.mkdir(parents=True)
    write_image(read_image(cohort / "c1_ct.nii.gz"), held)
    before = held.read_bytes()
    manifest = write_manifest(cohort, [f"earlier,{held},c1_mask.nii.gz,,", "later,c2_ct.nii.gz,c2_mask.nii.gz,,"])
    events = []
    grade_manifest(manifest, out, student, "cpu", progress=events.append)
    assert [e["status"] for e in events] == ["ok", "error"]
    assert "would overwrite the input" in events[1]["error"] and held.read_bytes() == before
    shutil.copy(cohort / "c0_mask.nii.gz", out / "results.csv")  # an input where the table goes: no run at all
    table = out / "results.csv"
    before = table.read_bytes()
    with pytest.raises(ReactKDError, match="would overwrite the input"):
        grade_manifest(write_manifest(cohort, [f"t,c0_ct.nii.gz,{table},,"]), out, student, "cpu")
    assert table.read_bytes() == before


def test_a_changed_data_file_of_a_detached_header_is_graded_again(cohort, student, tmp_path):
    import os

    write_image(read_image(cohort / "c2_ct.nii.gz"), tmp_path / "ct.nhdr")
    data = next(p for p in tmp_path.iterdir() if p.name.startswith("ct.") and p.suffix != ".nhdr")
    manifest = write_manifest(tmp_path, [f"h,ct.nhdr,{cohort / 'c2_mask.nii.gz'},,"])
    grade_manifest(manifest, tmp_path / "out", student, "cpu")
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_000_000))  # the header itself is untouched
    events = []
    grade_manifest(manifest, tmp_path / "out", student, "cpu", progress=events.append)
    assert [e["status"] for e in events] == ["ok"]
