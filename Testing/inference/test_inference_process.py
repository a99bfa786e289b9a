"""The REACTKD module's persistent inference process (`reactkd serve` + InferenceProcess) with the real
child: the model loads once and stays warm, progress arrives as structured events, bad input is an error
while the child keeps serving, cancel kills the child's process group and the next request starts a new
one, a crashed child gives a clear error without harming the caller, and the protocol itself (server side,
in process) answers garbage with error events."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from model_packages import make_package
from reactkd.errors import ReactKDError
from reactkd.images.geometry import Geometry
from reactkd.inference.client import InferenceProcess, remove_stale_sessions
from reactkd.inference.server import ClassifierCache, serve
from reactkd.processes import group_alive
from synthetic_images import make_case

pytestmark = pytest.mark.skipif(os.name == "nt", reason="process-group checks are POSIX")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("model") / "student")


@pytest.fixture(scope="module")
def inputs():
    ct, mask, pet = make_case()
    return {"ct": ct, "mask": mask, "pet_fdg": pet, "pet_act": None}


@pytest.fixture
def server():
    process = InferenceProcess(command=[sys.executable, "-m", "reactkd", "serve"])
    yield process
    process.shutdown()


def finished(request, timeout=120):
    assert request.wait(timeout), f"request stuck at {request.stage}"
    return request


def test_model_loads_once_and_results_come_back_on_the_ct_grid(server, student, inputs):
    first = server.submit(inputs, student, "cpu")
    assert not first.done  # submit returns at once; the work is in the background
    stages = set()
    while not first.done:
        stages.add(first.stage)
        time.sleep(0.005)
    result = first.result()
    assert first.model_was_loaded is False and server.loaded == {(str(student), "cpu"): "cpu"}
    assert abs(sum(result.probabilities.values()) - 1) < 1e-5 and result.grade in result.class_names
    for image in (result.attention_cbam, result.attention_gradcam):
        assert Geometry.of(image).same_as(Geometry.of(inputs["ct"]), tol=1e-6)
    assert result.inputs == ["ct", "pet_fdg"] and result.graph["nodes"]
    assert stages & {"writing inputs", "reading inputs", "loading model", "classifying"}
    pid = server.pid
    second_request = finished(server.submit(inputs, student, "cpu"))
    second = second_request.result()
    assert second_request.model_was_loaded is True  # the server kept the model of the first request
    assert server.pid == pid and server.busy is False
    assert np.array_equal(sitk.GetArrayViewFromImage(second.attention_cbam),
                          sitk.GetArrayViewFromImage(result.attention_cbam))
    assert second.probabilities == result.probabilities


def test_bad_input_is_an_error_and_the_child_keeps_serving(server, student, inputs):
    empty = sitk.Image(inputs["mask"])
    empty *= 0
    request = finished(server.submit({**inputs, "mask": empty}, student, "cpu"))
    pid = server.pid
    with pytest.raises(ReactKDError, match="(?i)liver|tumour|mask"):
        request.result()
    assert server.pid == pid
    assert finished(server.submit(inputs, student, "cpu")).result() is not None
    with pytest.raises(ReactKDError, match="model"):
        finished(server.submit(inputs, student.parent / "absent", "cpu")).result()
    assert server.pid == pid


def test_one_request_at_a_time(server, student, inputs):
    request = server.submit(inputs, student, "cpu")
    with pytest.raises(ReactKDError, match="already running"):
        server.submit(inputs, student, "cpu")
    finished(request)


def test_cancel_kills_the_process_group_and_the_next_request_starts_a_new_child(server, student, inputs):
    finished(server.submit(inputs, student, "cpu"))
    old = server.pid
    request = server.submit(inputs, student, "cpu")
    while request.stage not in ("loading model", "classifying", "writing outputs") and not request.done:
        time.sleep(0.001)
    server.cancel()
    assert request.done and request.cancelled and request.result() is None
    deadline = time.monotonic() + 10
    while group_alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(old)
    assert server.pid is None and server.loaded == {}
    again = finished(server.submit(inputs, student, "cpu"))
    assert again.result() is not None and server.pid not in (None, old) and again.model_was_loaded is False


def test_a_crashed_child_is_reported_and_replaced(server, student, inputs):
    finished(server.submit(inputs, student, "cpu"))
    os.kill(server.pid, signal.SIGKILL)
    time.sleep(0.3)
    request = finished(server.submit(inputs, student, "cpu"))  # a fresh child takes it
    assert request.result() is not None
    crashed_pid = server.pid
    request = server.submit(inputs, student, "cpu")
    while request.stage not in ("loading model", "classifying") and not request.done:
        time.sleep(0.001)
    os.kill(crashed_pid, signal.SIGKILL)  # dies in the middle of the work, as a CUDA fault would
    finished(request)
    with pytest.raises(ReactKDError, match="stopped unexpectedly .*signal 9"):
        request.result()
    assert finished(server.submit(inputs, student, "cpu")).result() is not None


def test_shutdown_ends_the_child_and_removes_the_session_folder(student, inputs):
    process = InferenceProcess(command=[sys.executable, "-m", "reactkd", "serve"])
    finished(process.submit(inputs, student, "cpu"))
    pid, (session,) = process.pid, process._sessions.values()
    assert session.is_dir() and not any(session.iterdir())  # each request's files are removed after it
    process.shutdown()
    assert process.pid is None and not session.exists() and not group_alive(pid)


def test_stale_session_folders_of_dead_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"reactkd-inference-{int(gone.stdout)}-abc"
    alive = tmp_path / f"reactkd-inference-{os.getpid()}-abc"
    for folder in (dead, alive):
        (folder / "request-1").mkdir(parents=True)
    assert remove_stale_sessions(tmp_path) == [dead]
    assert alive.is_dir() and not dead.exists()


def test_protocol_errors_are_events_and_the_server_goes_on():
    class Fake:
        def classify(self, *args, **options):
            raise AssertionError("not reached")

    requests = "\n".join(["not json", "[1]", json.dumps({"op": "train", "id": 3}),
                          json.dumps({"op": "classify", "id": 4, "inputs": {"ct": "x"}}),
                          json.dumps({"op": "classify", "id": 5, "inputs": {"ct": "/absent.nrrd", "mask": "/m.nrrd"},
                                      "out": "/tmp/x"}),
                          json.dumps({"op": "shutdown"}), json.dumps({"op": "classify", "id": 6})]) + "\n"
    out = io.StringIO()
    assert serve(io.StringIO(requests), out, ClassifierCache(lambda *a: Fake())) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["event"] == "ready" and events[0]["protocol"] == 2
    errors = [e for e in events[1:] if e["event"] != "progress"]
    assert [e["event"] for e in errors] == ["error"] * 5  # nothing after shutdown
    assert "not JSON" in errors[0]["message"] and "JSON object" in errors[1]["message"]
    assert "unknown request op 'train'" in errors[2]["message"] and errors[2]["id"] == 3
    assert "inputs.ct and inputs.mask" in errors[3]["message"]
    assert errors[4]["id"] == 5 and errors[4]["message"].startswith("CT: ")


def test_classifier_cache_loads_each_model_and_device_once(tmp_path):
    built = []
    cache = ClassifierCache(lambda folder, device: built.append((folder, device)) or object())
    first = cache.get(tmp_path / "a", "auto")
    assert cache.get(tmp_path / "a" / ".." / "a", " AUTO ") is first
    assert cache.get(tmp_path / "a", "cpu") is not first and cache.get(tmp_path / "b", "auto") is not first
    assert [device for _, device in built] == ["auto", "cpu", "auto"]
    assert cache.is_loaded(str(tmp_path / "a"), "CPU") and not cache.is_loaded(tmp_path / "c", "cpu")


def test_maps_travel_as_their_non_zero_box_and_come_back_on_the_ct_grid(tmp_path):
    from reactkd.images.geometry import nonzero_box
    from reactkd.inference.outputs import _onto

    ct, _, _ = make_case()
    values = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.float32)
    values[5:9, 10:20, 30:33] = np.random.default_rng(0).random((4, 10, 3)).astype(np.float32) + 0.1
    attention = sitk.GetImageFromArray(values)
    attention.CopyInformation(ct)
    box = nonzero_box(attention)
    assert box.GetSize() == (3, 10, 4)
    back = _onto(box, ct, "map")
    assert Geometry.of(back).same_as(Geometry.of(ct), tol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), values)
    empty = nonzero_box(attention * 0)
    assert empty.GetSize() == (1, 1, 1) and not sitk.GetArrayViewFromImage(_onto(empty, ct, "map")).any()
    shifted = sitk.Image(box)
    shifted.SetOrigin([o + 0.37 for o in box.GetOrigin()])  # between voxels: not a box of the grid
    with pytest.raises(ReactKDError, match="not a box of the CT grid"):
        _onto(shifted, ct, "map")


def test_raw_buffers_and_image_files_give_identical_results(student, inputs, tmp_path):
    from reactkd.images.writers import write_image
    from reactkd.inference.outputs import read_outputs
    from reactkd.inference.transfer import paste_box, write_volume

    given = {name: image for name, image in inputs.items() if image is not None}
    files = {name: str(write_image(image, tmp_path / f"{name}.nrrd", compress=False)) for name, image in given.items()}
    raw = {name: write_volume(image, tmp_path / f"{name}.raw") for name, image in given.items()}
    requests = [{"op": "classify", "id": 1, "model": str(student), "device": "cpu", "inputs": files,
                 "out": str(tmp_path / "files")},
                {"op": "classify", "id": 2, "model": str(student), "device": "cpu", "inputs": raw,
                 "out": str(tmp_path / "raw"), "maps": "raw"}]
    out = io.StringIO()
    serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out, ClassifierCache())
    by_file, by_raw = [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == "result"]
    expected = read_outputs(by_file["out"], reference=inputs["ct"])
    assert by_raw["summary"]["probabilities"] == expected.probabilities and by_raw["graph"] == expected.graph
    for name in ("attention_cbam", "attention_gradcam"):
        box = by_raw["maps"][name]
        assert box["size"] != list(inputs["ct"].GetSize())  # only the crop box travels
        pasted = paste_box(box, inputs["ct"], name)
        assert Geometry.of(pasted).same_as(Geometry.of(inputs["ct"]), tol=0)
        # Two classifications (Grad-CAM's backward pass may differ in the last bit between calls); the transfer
        # itself is exact: test_raw_map_boxes_come_back_bit_for_bit.
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(pasted),
                                   sitk.GetArrayViewFromImage(getattr(expected, name)), rtol=0, atol=1e-6)


def test_raw_map_boxes_come_back_bit_for_bit(tmp_path):
    from types import SimpleNamespace

    from reactkd.inference.result import ClassificationResult
    from reactkd.inference.server import _write_raw_maps
    from reactkd.inference.transfer import paste_box

    ct, _, _ = make_case()
    values = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.float32)
    values[4:31, 9:40, 6:51] = np.random.default_rng(7).random((27, 31, 45), dtype=np.float32)
    maps = sitk.GetImageFromArray(values)
    maps.CopyInformation(ct)
    result = ClassificationResult("well", 0, ["well"], {"well": 1.0}, maps, maps * 2, {}, {}, "cpu", ["ct"], {},
                                  preprocessed=SimpleNamespace(crop_index=((6, 51), (9, 40), (4, 31))))
    described = _write_raw_maps(result, tmp_path / "out")
    assert described["attention_cbam"]["index"] == [6, 9, 4] and described["attention_cbam"]["size"] == [45, 31, 27]
    for name, factor in (("attention_cbam", 1), ("attention_gradcam", 2)):
        back = paste_box(described[name], ct, name)
        assert back.GetOrigin() == ct.GetOrigin() and back.GetDirection() == ct.GetDirection()
        assert back.GetSpacing() == ct.GetSpacing() and back.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), values * factor)


def test_only_the_crop_the_model_reads_travels_and_the_result_is_the_in_process_one(server, student, inputs,
                                                                                    monkeypatch):
    """The client sends the CT and mask cut to the model's liver box (`transfer.crop_to_liver`) and pastes the
    maps back at the box's place: the same probabilities, graph and maps as classifying the whole CT here."""
    from reactkd.inference import transfer
    from reactkd.inference.classifier import Classifier

    sent = []
    real_write = transfer.write_volume
    monkeypatch.setattr(transfer, "write_volume", lambda image, path: sent.append(image.GetSize()) or
                        real_write(image, path))
    result = finished(server.submit(inputs, student, "cpu")).result()
    here = Classifier(student, device="cpu").classify(inputs["ct"], inputs["mask"], inputs["pet_fdg"])
    assert sent[0] != inputs["ct"].GetSize() and np.prod(sent[0]) < 0.9 * np.prod(inputs["ct"].GetSize())
    assert result.probabilities == here.probabilities and result.graph == here.graph
    for name in ("attention_cbam", "attention_gradcam"):
        theirs, ours = getattr(result, name), getattr(here, name)
        assert Geometry.of(theirs).same_as(Geometry.of(ours), tol=0)
        np.testing.assert_allclose(sitk.GetArrayViewFromImage(theirs), sitk.GetArrayViewFromImage(ours),
                                   rtol=0, atol=1e-6)  # Grad-CAM's backward may differ in the last bit
