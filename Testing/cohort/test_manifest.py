import re
from pathlib import Path

import pytest

from reactkd.cohort.manifest import COLUMNS, read_manifest, write_manifest
from reactkd.errors import ManifestError


@pytest.fixture
def cohort(tmp_path):
    for name in ("a/ct.nii.gz", "a/mask.nii.gz", "a/fdg.nii.gz", "b/ct.nii.gz", "b/mask.nii.gz"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def _write(root, rows, header=",".join(COLUMNS)):
    (root / "manifest.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_valid_manifest_resolves_relative_paths(cohort):
    path = _write(cohort, ["a,p1,2,a/ct.nii.gz,a/fdg.nii.gz,,a/mask.nii.gz", "b,p1,poor,b/ct.nii.gz,,,b/mask.nii.gz"])
    records = read_manifest(path)
    assert [r.case_id for r in records] == ["a", "b"]
    assert records[0].ct == (cohort / "a/ct.nii.gz").resolve() and records[0].pet_act is None
    assert records[0].modalities == ("ct", "pet_fdg") and records[1].label == 2


def test_every_problem_is_reported_once(cohort):
    path = _write(cohort, [
        "a,p1,7,a/ct.nii.gz,,,a/mask.nii.gz",            # unknown label
        "a,p2,0,b/ct.nii.gz,,,b/mask.nii.gz",            # duplicate id
        "c,p3,1,,a/fdg.nii.gz,,a/mask.nii.gz",           # PET without CT
        "d,p4,1,missing.nii.gz,,,a/mask.nii.gz",         # missing file
        "e,p5,1,../outside.nii.gz,,,a/mask.nii.gz",      # escapes the cohort
        "f,p6,1,/etc/passwd,,,a/mask.nii.gz",            # absolute
        "g,,1,a/ct.nii.gz,,,",                           # empty patient and mask
    ])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    for expected in ("unknown label '7'", "duplicate case_id 'a'", "PET without CT", "file not found: missing.nii.gz",
                     "outside the cohort folder", "absolute path", "empty patient_id", "mask column is required"):
        assert expected in message
    assert message.count("\n") == 8


def test_missing_columns_and_empty(cohort):
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(_write(cohort, ["a,p1,0"], header="case_id,patient_id,label"))
    with pytest.raises(ManifestError, match="no cases"):
        read_manifest(_write(cohort, []))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(cohort / "nope.csv")


def test_write_then_read(cohort):
    path = write_manifest(cohort / "manifest.csv", [
        {"case_id": "a", "patient_id": "p", "label": "0", "ct": "a/ct.nii.gz", "mask": "a/mask.nii.gz"}])
    assert read_manifest(path)[0].pet_fdg is None


def test_duplicated_columns_are_refused_not_resolved_silently(tmp_path):
    from reactkd.cohort.manifest import read_manifest
    from reactkd.errors import ManifestError

    path = tmp_path / "m.csv"
    path.write_text("case_id,patient_id,label,ct,pet_fdg,pet_act,mask,label\nc,p,0,ct.nii.gz,,,m.nii.gz,2\n")
    with pytest.raises(ManifestError, match="duplicated column.*label"):
        read_manifest(path)


@pytest.mark.parametrize("labels, pattern", [([0, 1, 2, 0, 1, 2], "too small for 3 folds: 2 case"),
                                             ([0, 0, 0, 0, 1], "fewer than 2 grades to train on")])
def test_a_cohort_too_small_for_its_folds_says_so_in_one_line(labels, pattern):
    from reactkd.cohort.folds import split_fold
    from reactkd.cohort.manifest import CaseRecord
    from reactkd.errors import ConfigError

    records = [CaseRecord(f"c{i}", f"p{i}", label, Path("ct"), None, None, Path("m")) for i, label in enumerate(labels)]
    messages = []
    for fold in range(3):
        try:
            split_fold(records, fold, 3)
        except ConfigError as exc:
            messages.append(str(exc))
    assert messages and all("\n" not in m for m in messages) and any(re.search(pattern, m) for m in messages)


def test_the_latent_differentiation_column_is_optional_and_checked(cohort):
    header = ",".join(COLUMNS) + ",differentiation"
    path = _write(cohort, ["a,p1,2,a/ct.nii.gz,,,a/mask.nii.gz,2.4", "b,p2,0,b/ct.nii.gz,,,b/mask.nii.gz,"], header)
    assert [r.differentiation for r in read_manifest(path)] == [2.4, None]
    for bad in ("high", "nan", "7"):
        path = _write(cohort, [f"a,p1,2,a/ct.nii.gz,,,a/mask.nii.gz,{bad}"], header)
        with pytest.raises(ManifestError, match=f"line 2: differentiation must be a number from -1 to 4.*'{bad}'"):
            read_manifest(path)
