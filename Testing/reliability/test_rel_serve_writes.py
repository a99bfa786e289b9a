"""Destructive writes of the inference server and the catalogue: `serve` never writes over one of its inputs
(every write goes through `check_output` with the request's inputs), and `ModelCatalog.remove(...,
delete_files=True)` deletes only inside the catalogue's models folder, whatever models.json says."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ModelPackageError
from reactkd.images.writers import write_image
from reactkd.inference.result import ClassificationResult
from reactkd.inference.server import ClassifierCache, serve
from reactkd.inference.transfer import write_volume
from reactkd.package.catalog import ModelCatalog
from synthetic_images import make_case


class FakeClassifier:
    """Returns a fixed result with maps on the CT grid; records that it ran."""

    def __init__(self) -> None:
        self.calls = 0

    def classify(self, ct, mask, pet_fdg=None, pet_act=None, maps_on_ct_grid=True):  # full-size maps either way
        self.calls += 1
        values = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.float32)
        values[3:7, 5:11, 2:13] = 0.25
        attention = sitk.GetImageFromArray(values)
        attention.CopyInformation(ct)
        return ClassificationResult(grade="moderate", class_index=1, class_names=["well", "moderate", "poor"],
                                    probabilities={"well": 0.2, "moderate": 0.5, "poor": 0.3},
                                    attention_cbam=attention, attention_gradcam=attention,
                                    graph={"nodes": [], "edges": []}, model={"name": "fake"}, device="cpu",
                                    inputs=["ct"], timings_ms={})


@pytest.fixture
def case():
    ct, mask, _ = make_case(shape_zyx=(12, 18, 22), tumour_centre_zyx=(6, 9, 11), tumour_radius=3)
    return ct, mask


def run_serve(requests: list[dict]) -> tuple[list[dict], FakeClassifier]:
    fake = FakeClassifier()
    out = io.StringIO()
    serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out, ClassifierCache(lambda *a: fake))
    return [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] in ("result", "error")], fake


def inputs_in(folder, case, maps: str, ct_name: str) -> dict:
    ct, mask = case
    folder.mkdir(parents=True, exist_ok=True)
    if maps == "raw":
        return {"ct": write_volume(ct, folder / ct_name), "mask": write_volume(mask, folder / "labels.raw")}
    return {"ct": str(write_image(ct, folder / ct_name)), "mask": str(write_image(mask, folder / "labels.nrrd"))}


@pytest.mark.parametrize(("maps", "ct_name"), [("files", "attention_gradcam.nrrd"), ("files", "graph.json.nrrd"),
                                               ("raw", "attention_cbam.raw"), ("raw", "attention_gradcam.raw")])
def test_serve_never_writes_its_maps_over_an_input(tmp_path, case, maps, ct_name):
    out = tmp_path / "shared"
    given = inputs_in(out, case, maps, ct_name)
    victim = out / ct_name
    before = victim.read_bytes()
    events, fake = run_serve([{"op": "classify", "id": 8, "inputs": given, "out": str(out), "maps": maps}])
    if ct_name == "graph.json.nrrd":  # a name the outputs do not use: allowed, the input stays as it was
        assert events[0]["event"] == "result"
    else:
        assert events[0]["event"] == "error" and "would overwrite the input" in events[0]["message"]
        assert fake.calls == 0  # refused before any work
    assert victim.read_bytes() == before


def test_serve_refuses_an_out_that_is_an_input_file(tmp_path, case):
    given = inputs_in(tmp_path / "in", case, "raw", "scan.raw")
    events, fake = run_serve([{"op": "classify", "id": 2, "inputs": given, "out": given["ct"]["raw"], "maps": "raw"}])
    assert events[0]["event"] == "error" and "not a folder" in events[0]["message"] and fake.calls == 0


def test_serve_writes_its_maps_beside_inputs_that_it_does_not_overwrite(tmp_path, case):
    given = inputs_in(tmp_path / "in", case, "raw", "scan.raw")
    events, fake = run_serve([{"op": "classify", "id": 4, "inputs": given, "out": str(tmp_path / "in"),
                               "maps": "raw"}])
    assert events[0]["event"] == "result" and fake.calls == 1
    assert sorted(os.listdir(tmp_path / "in")) == ["attention_cbam.raw", "attention_gradcam.raw", "labels.raw",
                                                   "scan.raw"]


# ------------------------------------------------------------------------------------------- catalogue
@pytest.fixture
def catalogue(tmp_path):
    return ModelCatalog(tmp_path / "home" / "models.json", shipped_file=tmp_path / "no-shipped.json")


def imported_entry(catalogue: ModelCatalog, path) -> None:
    """models.json naming `path` as an imported copy, as a hand-edited (or planted) file would."""
    catalogue.user_file.parent.mkdir(parents=True, exist_ok=True)
    catalogue.user_file.write_text(json.dumps({"schema_version": 1, "models": [
        {"name": "planted", "version": "3", "path": str(path), "sha256": "ab" * 32, "source": "imported"}]}))


def precious(folder):
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    return folder


@pytest.mark.parametrize("where", ["outside", "dot-dot", "link-inside-to-outside", "models-folder-itself",
                                   "through-linked-parent"])
def test_catalogue_deletes_nothing_outside_its_models_folder(catalogue, tmp_path, where):
    victim = precious(tmp_path / "elsewhere" / "work")
    models = catalogue.models_dir
    models.mkdir(parents=True)
    named = {"outside": victim, "dot-dot": models / ".." / ".." / "elsewhere" / "work",
             "link-inside-to-outside": models / "linked", "models-folder-itself": models,
             "through-linked-parent": models / "hop" / "work"}[where]
    if where == "link-inside-to-outside":
        named.symlink_to(victim, target_is_directory=True)
    if where == "through-linked-parent":
        (models / "hop").symlink_to(victim.parent, target_is_directory=True)
    imported_entry(catalogue, named)
    with pytest.raises(ModelPackageError, match="outside the models folder"):
        catalogue.remove("planted", delete_files=True)
    assert (victim / "thesis.tex").read_text() == "years of work"
    assert [e.name for e in catalogue.user_entries()] == ["planted"]  # refused: nothing changed


def test_catalogue_deletes_an_imported_copy_inside_its_models_folder(catalogue):
    copy = precious(catalogue.models_dir / "copy-7")
    imported_entry(catalogue, copy)
    assert catalogue.remove("planted", delete_files=True).path == copy
    assert not copy.exists() and catalogue.user_entries() == []
