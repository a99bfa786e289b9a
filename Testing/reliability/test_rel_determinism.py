"""Determinism: the same seed gives a byte-identical synthetic cohort; classifying the same case twice, with
two separately loaded classifiers, gives byte-identical outputs (CPU).

Training: Testing/training/test_training_integration.py (resume equals an uninterrupted run) and
test_rel_crash_safety.py (three SIGKILLs, then the resumed weights equal a separate uninterrupted run) show
that two CPU runs with the same seed produce the same weights byte for byte.
"""

from __future__ import annotations

import json

from rel_support import files_under, run_cli

from reactkd.cohort.synth import write_cohort


def _contents(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(files_under(folder))}


def test_same_seed_gives_a_byte_identical_cohort(tmp_path):
    first = _contents(write_cohort(tmp_path / "a", 3, seed=11).parent)
    second = _contents(write_cohort(tmp_path / "b", 3, seed=11).parent)
    assert first == second and len(first) >= 7  # manifest + at least ct and mask per case
    other = _contents(write_cohort(tmp_path / "c", 3, seed=12).parent)
    assert any(other.get(name) != data for name, data in first.items() if name.endswith("ct.nii.gz"))


def test_classify_twice_gives_identical_outputs(case_dir, tiny_package, tmp_path, capsys):
    outputs = []
    for run in ("first", "second"):
        argv = ["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                "--pet-fdg", str(case_dir / "pet_fdg.nii.gz"), "--model", str(tiny_package), "--out",
                str(tmp_path / run), "--device", "cpu", "--no-render"]
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
        files = _contents(tmp_path / run)
        result = json.loads(files.pop("result.json"))
        result.pop("timings_ms")
        outputs.append((files, result))
    assert outputs[0] == outputs[1]
    assert set(outputs[0][0]) == {"attention_cbam.nrrd", "attention_gradcam.nrrd", "graph.json", "report.html"}
