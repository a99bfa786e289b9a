"""`reactkd classify` output contract, geometry on the native CT grid, inputs and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series import write_dicom_series
from model_packages import make_package
from reactkd.cli.main import main
from reactkd.cohort.synth import generate_case
from reactkd.errors import MaskError, ModelPackageError
from reactkd.images.geometry import Geometry
from reactkd.images.readers import read_image
from reactkd.images.writers import write_image
from reactkd.inference.classifier import Classifier


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    case = generate_case(3, 2, size="small")
    for name in ("ct", "pet_fdg", "pet_act", "mask"):
        write_image(getattr(case, name), folder / f"{name}.nii.gz")
    return folder, case


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("model") / "student")


def test_classify_writes_every_output_on_the_exact_ct_grid(case_files, student, tmp_path, capsys):
    folder, case = case_files
    out = tmp_path / "out"
    code = main(["classify", "--ct", str(folder / "ct.nii.gz"), "--mask", str(folder / "mask.nii.gz"),
                 "--model", str(student), "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["result.json", "attention_cbam.nrrd", "attention_gradcam.nrrd", "graph.json", "report.html", "overview.png",
         "scene.mrb"])
    result = json.loads((out / "result.json").read_text())
    assert result["grade"] in result["class_names"] and result["class_names"][result["class_index"]] == result["grade"]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert result["inputs"] == ["ct"] and result["device"] == "cpu"
    assert len(result["model"]["sha256"]) == 64
    ct_geometry = Geometry.of(case.ct)
    for name in ("attention_cbam.nrrd", "attention_gradcam.nrrd"):
        image = sitk.ReadImage(str(out / name))
        assert Geometry.of(image).same_as(ct_geometry, tol=1e-5)
        values = sitk.GetArrayViewFromImage(image)
        assert values.min() >= 0 and values.max() <= 1 and values.max() > 0
    assert "grade:" in capsys.readouterr().out


def test_graph_centroids_lie_inside_their_regions(case_files, student):
    _, case = case_files
    result = Classifier(student, device="cpu").classify(case.ct, case.mask)
    labels = sitk.GetArrayViewFromImage(case.mask)
    kinds = {"tumour": {2}, "ring": {1}, "liver": {1}}
    for node in result.graph["nodes"]:
        lps = np.array(node["centroid_ras"]) * [-1, -1, 1]
        index = np.round(case.ct.TransformPhysicalPointToContinuousIndex(lps.tolist())).astype(int)
        assert labels[index[2], index[1], index[0]] in kinds[node["kind"]], node
        assert node["volume_ml"] > 0 and 0 <= node["importance"] <= 1
    ids = {n["id"] for n in result.graph["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in result.graph["edges"])


def test_oblique_anisotropic_and_dicom_inputs_keep_geometry(case_files, student, tmp_path):
    _, case = case_files
    ct = sitk.Image(case.ct)
    ct.SetDirection((0.9848078, -0.1736482, 0.0, 0.1736482, 0.9848078, 0.0, 0.0, 0.0, 1.0))
    ct.SetSpacing((0.9, 1.3, 3.1))
    mask = sitk.Image(case.mask)
    mask.CopyInformation(ct)
    result = Classifier(student, device="cpu").classify(ct, mask)
    assert Geometry.of(result.attention_cbam).same_as(Geometry.of(ct), tol=1e-6)
    write_dicom_series(ct, tmp_path / "dicom")
    dicom_ct = read_image(tmp_path / "dicom")
    mask.CopyInformation(dicom_ct)
    from_dicom = Classifier(student, device="cpu").classify(dicom_ct, mask)
    assert Geometry.of(from_dicom.attention_gradcam).same_as(Geometry.of(dicom_ct), tol=1e-6)


def test_native_attention_peaks_where_the_model_attends(case_files, student, monkeypatch):
    """Force the CBAM attention onto one feature voxel; the native map must peak at that voxel's physical point."""
    import torch

    from reactkd.preprocessing import coarser_geometry

    _, case = case_files
    classifier = Classifier(student, device="cpu")
    real_attention = classifier.model.attention_map
    state = {}

    def forced():
        shape = real_attention().shape[2:]
        cell = (shape[0] // 2, shape[1] // 4, shape[2] - 2)  # (d, h, w), off-centre on purpose
        forced_map = torch.zeros(1, 1, *shape)
        forced_map[0, 0, cell[0], cell[1], cell[2]] = 1
        state.update(shape=tuple(shape), cell=cell)
        return forced_map

    monkeypatch.setattr(classifier.model, "attention_map", forced)
    result = classifier.classify(case.ct, case.mask)
    coarse = coarser_geometry(result.preprocessed.grid, state["shape"])
    expected = coarse.index_to_physical() @ np.array([*reversed(state["cell"]), 1.0])
    native = sitk.GetArrayViewFromImage(result.attention_cbam)
    peak = np.unravel_index(np.argmax(native), native.shape)
    peak_point = np.array(result.attention_cbam.TransformIndexToPhysicalPoint([int(i) for i in peak[::-1]]))
    assert np.linalg.norm(peak_point - expected[:3]) <= np.linalg.norm(case.ct.GetSpacing())


def test_liver_and_tumour_masks_and_pet_inputs(case_files, student, tmp_path):
    folder, case = case_files
    labels = sitk.GetArrayFromImage(case.mask)
    for name, value in (("liver", labels >= 1), ("tumour", labels == 2)):
        image = sitk.GetImageFromArray(value.astype(np.uint8))
        image.CopyInformation(case.mask)
        write_image(image, tmp_path / f"{name}.nii.gz")
    out = tmp_path / "out"
    code = main(["classify", "--ct", str(folder / "ct.nii.gz"), "--liver", str(tmp_path / "liver.nii.gz"),
                 "--tumor", str(tmp_path / "tumour.nii.gz"), "--pet-fdg", str(folder / "pet_fdg.nii.gz"),
                 "--pet-act", str(folder / "pet_act.nii.gz"), "--model", str(student), "--out", str(out),
                 "--no-render"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["inputs"] == ["ct", "pet_fdg", "pet_act"]
    assert not (out / "overview.png").exists()


@pytest.mark.parametrize("architecture,inputs", [("sf_teacher", ("pet_fdg",)), ("sf_teacher", ("pet_act",)),
                                                  ("sf_teacher", ("pet_fdg", "pet_act")), ("dose_teacher", ())])
def test_teachers_classify_their_modality_subsets(case_files, tmp_path, architecture, inputs):
    _, case = case_files
    package = make_package(tmp_path / architecture, architecture, grid=(32, 32, 32))
    pets = {name: getattr(case, name) for name in inputs}
    result = Classifier(package, device="cpu").classify(case.ct, case.mask, **pets)
    assert result.inputs == ["ct", *inputs]


def test_pet_given_to_a_ct_only_student_is_ignored_with_a_warning(case_files, tmp_path):
    _, case = case_files
    package = make_package(tmp_path / "ct-only", in_channels=1)  # what the shipped student reads
    plain = Classifier(package, device="cpu").classify(case.ct, case.mask)
    result = Classifier(package, device="cpu").classify(case.ct, case.mask, pet_fdg=case.pet_fdg, pet_act=case.pet_act)
    assert result.inputs == ["ct"]
    assert [w for w in result.warnings if "ignored" in w] == [
        "pet_fdg given but model 'test-student' does not use it; ignored",
        "pet_act given but model 'test-student' does not use it; ignored"]
    assert result.probabilities == plain.probabilities  # the PET changed nothing


def test_modality_mismatch_and_tampered_package_are_refused(case_files, student, tmp_path):
    _, case = case_files
    sf = make_package(tmp_path / "sf", "sf_teacher", grid=(32, 32, 32))
    with pytest.raises(ModelPackageError, match="needs FDG or acetate PET"):
        Classifier(sf, device="cpu").classify(case.ct, case.mask)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("model.safetensors", "metadata.json"):
        (tampered / name).write_bytes((student / name).read_bytes())
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="checksum mismatch"):
        Classifier(tampered, device="cpu")


def test_cli_bad_inputs_exit_2_with_one_line_and_no_outputs(case_files, student, tmp_path, capsys):
    folder, case = case_files
    empty = sitk.GetImageFromArray(np.minimum(sitk.GetArrayFromImage(case.mask), 1).astype(np.uint8))
    empty.CopyInformation(case.mask)
    write_image(empty, tmp_path / "no_tumour.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    cases = [
        ["--ct", str(folder / "ct.nii.gz"), "--mask", str(tmp_path / "no_tumour.nii.gz")],
        ["--ct", str(tmp_path / "junk.nii.gz"), "--mask", str(folder / "mask.nii.gz")],
        ["--ct", str(folder / "ct.nii.gz"), "--mask", str(folder / "pet_fdg.nii.gz")],
        ["--ct", str(folder / "ct.nii.gz"), "--mask", str(folder / "mask.nii.gz"), "--device", "cuda"],
    ]
    for i, args in enumerate(cases):
        out = tmp_path / f"out{i}"
        code = main(["classify", *args, "--model", str(student), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and "\n" not in err, (args, err)
        assert not out.exists() or not any(out.iterdir())


def test_classify_is_deterministic_and_thread_safe(case_files, student):
    from concurrent.futures import ThreadPoolExecutor

    _, case = case_files
    classifier = Classifier(student, device="cpu")
    first = classifier.classify(case.ct, case.mask)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: classifier.classify(case.ct, case.mask), range(3)))
    for result in results:
        assert result.probabilities == first.probabilities
        assert np.array_equal(sitk.GetArrayViewFromImage(result.attention_cbam),
                              sitk.GetArrayViewFromImage(first.attention_cbam))
    with pytest.raises(MaskError):
        classifier.classify(case.ct, sitk.Image(case.mask) * 0)


def test_cuda_out_of_memory_falls_back_to_the_cpu_with_a_warning(case_files, student, monkeypatch):
    """Simulate a CUDA device whose first forward runs out of memory: the case is redone on the CPU."""
    import torch

    _, case = case_files
    classifier = Classifier(student, device="cpu")
    real_infer = classifier._infer
    calls = []

    def infer_once_out_of_memory(prepared, regions, timings):
        calls.append(str(classifier.device))
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_infer(prepared, regions, timings)

    monkeypatch.setattr(classifier, "_infer", infer_once_out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    classifier.device = torch.device("cuda")
    result = classifier.classify(case.ct, case.mask)
    assert calls == ["cuda", "cpu"] and result.device == "cpu"
    assert any("out of memory" in warning for warning in result.warnings)


def test_repeated_classify_reuses_one_gradcam_and_matches_a_fresh_classifier(case_files, student):
    """MONAI's GradCAM hooks stay on the model: a second call must not add more, and a warm classifier must
    give what a fresh one gives (the predicted class is the one Grad-CAM explains)."""
    _, case = case_files
    warm = Classifier(student, device="cpu")
    layer = warm.model.get_submodule(warm.model.cam_layer)
    first = warm.classify(case.ct, case.mask)
    hooks = (len(layer._forward_hooks), len(layer._forward_pre_hooks), len(layer._backward_hooks))
    for _ in range(2):
        again = warm.classify(case.ct, case.mask)
    assert (len(layer._forward_hooks), len(layer._forward_pre_hooks), len(layer._backward_hooks)) == hooks
    fresh = Classifier(student, device="cpu").classify(case.ct, case.mask)
    for result in (again, fresh):
        assert result.probabilities == first.probabilities
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result.attention_gradcam),
                                      sitk.GetArrayViewFromImage(first.attention_gradcam))
    assert first.class_index == int(np.argmax(list(first.probabilities.values())))
    assert float(sitk.GetArrayViewFromImage(first.attention_gradcam).max()) > 0


@pytest.mark.parametrize("name", ["reactkd-demo-student", "reactkd-demo-teacher-sf", "reactkd-demo-teacher-dose"])
def test_every_shipped_package_is_listed_and_classifies_a_case_with_its_inputs(case_files, name, tmp_path):
    """The three demonstration packages: in the catalogue, verified, and usable by `reactkd classify --model`
    (the SF teacher with the PETs, the others on CT)."""
    from pathlib import Path

    from reactkd.package.catalog import ModelCatalog

    folder, _ = case_files
    entry = ModelCatalog(user_file=tmp_path / "none.json").get(name)
    assert entry.available and Path(entry.path).is_dir()
    pets = ["--pet-fdg", str(folder / "pet_fdg.nii.gz"), "--pet-act", str(folder / "pet_act.nii.gz")]
    code = main(["classify", "--ct", str(folder / "ct.nii.gz"), "--mask", str(folder / "mask.nii.gz"),
                 "--model", str(entry.path), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-render",
                 *(pets if "teacher-sf" in name else [])])
    assert code == 0
    result = json.loads((tmp_path / "out/result.json").read_text())
    expected_inputs = ["ct", "pet_fdg", "pet_act"] if "teacher-sf" in name else ["ct"]
    assert result["inputs"] == expected_inputs and result["model"]["name"] == name
    probabilities = np.array(list(result["probabilities"].values()))
    assert probabilities.sum() == pytest.approx(1.0) and (probabilities >= 0).all()
    assert result["grade"] == list(result["probabilities"])[int(np.argmax(probabilities))]
    if "teacher-sf" in name:  # the PET/CT teacher reads its PETs: without acetate it answers otherwise
        assert main(["classify", "--ct", str(folder / "ct.nii.gz"), "--mask", str(folder / "mask.nii.gz"),
                     "--model", str(entry.path), "--out", str(tmp_path / "fdg-only"), "--device", "cpu",
                     "--no-render", *pets[:2]]) == 0
        fdg_only = json.loads((tmp_path / "fdg-only/result.json").read_text())
        assert fdg_only["inputs"] == ["ct", "pet_fdg"]
        assert np.abs(np.array(list(fdg_only["probabilities"].values())) - probabilities).max() > 1e-3


@pytest.mark.parametrize("architecture", ["student", "dose_teacher"])
def test_classify_works_with_either_head(case_files, tmp_path, architecture):
    """Region head (default) and the paper's global head: probabilities, CBAM, Grad-CAM and graph on the CT grid."""
    _, case = case_files
    results = {}
    for head in ("region", "global"):
        package = make_package(tmp_path / f"{architecture}-{head}", architecture, head=head)
        assert json.loads((package / "metadata.json").read_text())["architecture_args"]["head"] == head
        result = Classifier(package, device="cpu").classify(case.ct, case.mask)
        assert sum(result.probabilities.values()) == pytest.approx(1.0)
        for image in (result.attention_cbam, result.attention_gradcam):
            assert Geometry.of(image).same_as(Geometry.of(case.ct), tol=1e-5)
            assert sitk.GetArrayViewFromImage(image).max() > 0
        assert result.graph["nodes"] and result.timings_ms["regions"] >= 0
        results[head] = result
    assert results["region"].probabilities != results["global"].probabilities
