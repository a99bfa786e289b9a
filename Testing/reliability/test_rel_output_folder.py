"""A run owns its output folder (issue 15, classes 3 and 4): outputs of an earlier run that this one does not
write are removed, a crash while installing the new set never leaves a folder that looks complete, staging
folders of a killed run are cleaned by the next one, and two runs into one folder take turns (a second batch
is refused)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from model_packages import make_package
from reactkd.atomic import folder_lock, remove_stale_staging
from reactkd.cli.main import main
from reactkd.errors import ReactKDError
from reactkd.images.writers import write_image
from reactkd.inference.classifier import Classifier
from reactkd.inference.outputs import write_outputs
from synthetic_images import make_case


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("model") / "student", grid=(16, 32, 32))


@pytest.fixture(scope="module")
def classified(package):
    ct, mask, _ = make_case(shape_zyx=(20, 32, 32), tumour_centre_zyx=(10, 16, 18), tumour_radius=4)
    return ct, mask, Classifier(package, device="cpu").classify(ct, mask)


def classify_into(out, ct_file, mask_file, package, capsys):
    code = main(["classify", "--ct", str(ct_file), "--mask", str(mask_file), "--model", str(package),
                 "--out", str(out), "--device", "cpu", "--no-render"])
    assert code == 0, capsys.readouterr().err


def test_a_second_patient_never_sits_beside_the_first_patients_scene(package, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("overview.png", "scene.mrb"):  # as a rendered run for patient A left them
        (out / name).write_bytes(b"patient A")
    notes = out / "my-notes.txt"
    notes.write_text("mine")
    ct, mask, _ = make_case()
    write_image(ct, tmp_path / "b_ct.nrrd")
    write_image(mask, tmp_path / "b_mask.nrrd")
    classify_into(out, tmp_path / "b_ct.nrrd", tmp_path / "b_mask.nrrd", package, capsys)
    assert sorted(p.name for p in out.iterdir()) == ["attention_cbam.nrrd", "attention_gradcam.nrrd", "graph.json",
                                                     "my-notes.txt", "report.html", "result.json"]
    assert notes.read_text() == "mine"  # not an output of the contract: never touched


def test_a_crash_while_installing_leaves_no_result_json(classified, tmp_path, monkeypatch):
    ct, mask, result = classified
    out = tmp_path / "out"
    write_outputs(result, out, ct, mask, render=False)
    real = Path.replace
    moved = []

    def fail_on_third(self, target):
        moved.append(self.name)
        if len(moved) == 3:
            raise OSError("power cut")
        return real(self, target)

    monkeypatch.setattr(Path, "replace", fail_on_third)
    with pytest.raises(OSError, match="power cut"):
        write_outputs(result, out, ct, mask, render=False)
    assert not (out / "result.json").exists()  # the folder shows it is incomplete
    assert not any(p.name.startswith(".reactkd-out-") for p in out.iterdir())


def test_staging_folders_of_killed_runs_are_removed_by_the_next_run(classified, tmp_path):
    ct, mask, result = classified
    out = tmp_path / "out"
    dead = out / ".reactkd-out-999999999-abcd"
    alive = out / f".reactkd-out-{os.getppid()}-efgh"  # a live process (our parent) may still be writing
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "attention_cbam.nrrd").write_bytes(b"half")
    write_outputs(result, out, ct, mask, render=False)
    assert not dead.exists() and alive.exists()
    assert remove_stale_staging(out) == []


def test_two_runs_into_one_folder_take_turns(classified, tmp_path):
    ct, mask, result = classified
    out = tmp_path / "out"
    out.mkdir()
    held = threading.Event()

    def hold():
        with folder_lock(out):
            held.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    start = time.monotonic()
    write_outputs(result, out, ct, mask, render=False)
    waited = time.monotonic() - start
    holder.join()
    assert waited > 0.5 and json.loads((out / "result.json").read_text())["grade"] == result.grade


def test_a_second_batch_into_a_busy_folder_is_refused(package, tmp_path):
    from reactkd.inference.batch import grade_manifest

    (tmp_path / "m.csv").write_text("case_id,ct,mask\n")
    out = tmp_path / "graded"
    with folder_lock(out), pytest.raises(ReactKDError, match="another reactkd run is writing into this folder"):
        (tmp_path / "m.csv").write_text("case_id,ct,mask\na,x.nrrd,y.nrrd\n")
        grade_manifest(tmp_path / "m.csv", out, package, "cpu")
