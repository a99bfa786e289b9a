"""The Slicer client and `serve` as a pair: the client's reader survives any line and any field type from the
child (a request always ends); one invalid UTF-8 byte costs `serve` one error event, not its life; `serve`
ends with its client (stdin closed, parent gone) and removes the session folder it was named, so a killed
Slicer leaves no patient data in /dev/shm; a /dev/shm too small for a request falls back to the temporary
folder instead of failing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.errors import ReactKDError
from reactkd.inference import client, transfer
from reactkd.inference.client import InferenceProcess
from reactkd.inference.server import ClassifierCache, serve
from synthetic_images import make_case

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX processes and /proc")
PREFIX = transfer.SESSION_PREFIX
SERVE = [sys.executable, "-m", "reactkd", "serve"]

#: What a confused child (or a library printing to stdout) may emit between protocol events.
STRAY = ["0", "[1]", "{oops", '"text"', "null", "1e999", "", "\x00\x01", json.dumps({"id": "{rid}"}),
         json.dumps({"event": "progress", "id": "{rid}", "fraction": None}),
         json.dumps({"event": "progress", "id": "{rid}", "fraction": "lots", "stage": {"deep": [1]}}),
         json.dumps({"event": "progress", "id": "{rid}", "fraction": [0.5]}),
         json.dumps({"event": "progress", "id": "{rid}", "fraction": float("inf")}),
         json.dumps({"event": "progress", "id": "{rid}", "fraction": -7}),
         json.dumps({"event": ["result"], "id": "{rid}"}), json.dumps({"event": "result", "id": ["{rid}"]}),
         json.dumps({"event": {"x": 1}, "id": {"y": 2}})]

FAKE_CHILD = textwrap.dedent("""
    import json, sys
    stray, final = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    print(json.dumps({"event": "ready", "protocol": 2, "pid": 0}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") != "classify":
            break
        rid = request["id"]
        for text in stray:
            print(text.replace('"{rid}"', str(rid)), flush=True)
        text = json.dumps(final).replace('"{rid}"', str(rid)).replace("{rid}", str(rid))
        event = json.loads(text.replace("{out}", request["out"]))
        print(json.dumps(event), flush=True)
""")


@pytest.fixture(scope="module")
def inputs():
    ct, mask, _ = make_case(shape_zyx=(10, 14, 16), tumour_centre_zyx=(5, 7, 8), tumour_radius=2)
    return {"ct": ct, "mask": mask, "pet_fdg": None, "pet_act": None}


def fake_process(final: dict) -> InferenceProcess:
    return InferenceProcess(command=[sys.executable, "-c", FAKE_CHILD, json.dumps(STRAY), json.dumps(final)])


def test_the_reader_survives_any_line_and_every_request_ends(inputs):
    process = fake_process({"event": "error", "id": "{rid}", "message": "fake failure {rid}"})
    try:
        for rid in (1, 2):  # the second request proves the reader lived through the first one's noise
            request = process.submit(inputs)
            assert request.wait(60), f"request {rid} never ended (stuck at {request.stage})"
            with pytest.raises(ReactKDError, match=f"fake failure {rid}"):
                request.result()
            assert 0.0 <= request.fraction <= 1.0
    finally:
        process.shutdown()


@pytest.mark.parametrize(("final", "message"), [
    ({"event": "result", "id": "{rid}"}, "without its maps"),
    ({"event": "result", "id": "{rid}", "summary": {}, "graph": {}, "maps": {"attention_cbam": "x"}}, "outside"),
    ({"event": "result", "id": "{rid}", "summary": {}, "graph": {},
      "maps": {"attention_cbam": {"raw": "/etc/hostname"}}}, "outside"),
    ({"event": "result", "id": "{rid}", "summary": {}, "graph": {}, "maps": {
        "attention_cbam": {"raw": "{out}/a.raw", "dtype": "<f4", "index": [0, 0, 0], "size": [99, 1, 1]},
        "attention_gradcam": {"raw": "{out}/b.raw", "dtype": "<f4", "index": [0, 0, 0], "size": [1, 1, 1]}}},
     "not a box of the CT grid"),
    ({"event": "error", "id": "{rid}", "message": 12345}, "12345"),
])
def test_a_malformed_answer_is_an_error_not_a_hang(inputs, final, message):
    process = fake_process(final)
    try:
        request = process.submit(inputs)
        assert request.wait(60)
        with pytest.raises(ReactKDError, match=message):
            request.result()
    finally:
        process.shutdown()


# ------------------------------------------------------------------------------------------ serve's stdin
def test_invalid_utf8_costs_one_error_event_in_process():
    lines = b"\xff\xfe garbage\n" + json.dumps({"op": "fly", "id": 31}).encode() + b"\n" + \
        b'{"op": "classify", "id": 32, "note": "caf\xe9"}\n' + json.dumps({"op": "shutdown"}).encode() + b"\n"
    out = io.StringIO()
    assert serve(io.TextIOWrapper(io.BytesIO(lines), encoding="utf-8"), out, ClassifierCache(lambda *a: None)) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()][1:]
    assert [e["event"] for e in events] == ["error"] * 3
    assert "not valid UTF-8 (byte 0xff at 0)" in events[0]["message"]
    assert "unknown request op 'fly'" in events[1]["message"] and events[1]["id"] == 31
    assert "not valid UTF-8 (byte 0xe9" in events[2]["message"]


def test_invalid_utf8_does_not_end_the_serve_process():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    requests = b"\xc3\x28\n" + json.dumps({"op": "dance", "id": 5}).encode() + b"\n"
    done = subprocess.run(SERVE, input=requests, capture_output=True, env=env, timeout=120)
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert [e["event"] for e in events] == ["ready", "error", "error"]
    assert "UTF-8" in events[1]["message"] and events[2]["id"] == 5 and b"Traceback" not in done.stderr


# ------------------------------------------------------------------------------ serve ends with its client
def session_folder(root: Path, tag: str) -> tuple[Path, dict]:
    """A client session folder with one request's files, and a request naming it (inputs that fail at once)."""
    session = root / f"{PREFIX}{os.getpid()}-{tag}"
    (session / "request-1-a").mkdir(parents=True)
    (session / "request-1-a" / "ct.raw").write_bytes(b"patient data")
    return session, {"op": "classify", "id": 1, "inputs": {"ct": {"raw": "absent"}, "mask": {"raw": "absent"}},
                     "out": str(session / "request-1-a" / "out"), "maps": "raw", "session": str(session)}


def test_serve_removes_the_session_folders_it_was_named_when_stdin_closes(tmp_path):
    session, request = session_folder(tmp_path, "named")
    other, other_request = session_folder(tmp_path, "out-elsewhere")
    other_request["out"] = str(tmp_path / "elsewhere")  # out outside the session: the session is not its own
    lookalike = tmp_path / "not-a-session"
    (lookalike / "r").mkdir(parents=True)
    fake = {**request, "session": str(lookalike), "out": str(lookalike / "r" / "out")}
    payload = "".join(json.dumps(r) + "\n" for r in (request, other_request, fake)).encode()
    done = subprocess.run(SERVE, input=payload, capture_output=True, timeout=120)  # stdin closes after these
    events = [json.loads(line)["event"] for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0 and events.count("error") == 3 and "result" not in events
    assert not session.exists() and other.is_dir() and lookalike.is_dir()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_serve_exits_and_cleans_up_when_its_parent_dies_with_stdin_still_open(tmp_path):
    session, request = session_folder(tmp_path, "orphaned")
    read_end, write_end = os.pipe()  # this test keeps the write end: stdin never closes
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, time
        child = subprocess.Popen({SERVE!r})
        print(child.pid, flush=True)
        time.sleep(600)
    """)], stdin=read_end, stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    try:
        server = int(parent.stdout.readline())
        assert json.loads(parent.stdout.readline())["event"] == "ready"
        os.write(write_end, (json.dumps(request) + "\n").encode())
        while json.loads(parent.stdout.readline())["event"] != "error":  # answered: the session is known
            pass
        assert session.is_dir() and alive(server)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not alive(server)), "serve outlived its parent"
        assert not session.exists()
    finally:
        os.close(write_end)
        parent.kill()


@pytest.mark.slow
def test_a_killed_client_leaves_no_server_and_no_session_folder(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np, SimpleITK as sitk
        from reactkd.inference.client import InferenceProcess
        values = np.zeros((6, 7, 8), np.float32)
        values[2, 3, 4] = np.nan  # refused while reading: no model (and no torch) needed
        ct = sitk.GetImageFromArray(values)
        process = InferenceProcess(command={SERVE!r})
        request = process.submit({{"ct": ct, "mask": sitk.Cast(ct * 0, sitk.sitkUInt8)}})
        assert request.wait(120)
        (session,) = process._sessions.values()
        print(process.pid, session, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr[-800:]
    pid, session = done.stdout.split()
    assert wait_until(lambda: not alive(int(pid))), "serve outlived the killed client"
    assert wait_until(lambda: not Path(session).exists()), f"{session} left behind"


# ---------------------------------------------------------------------------------------- small /dev/shm
def test_a_small_shared_memory_folder_falls_back_to_the_temporary_folder(tmp_path, monkeypatch, inputs):
    small, large = tmp_path / "shm", tmp_path / "tmp"
    small.mkdir()
    large.mkdir()
    free = {small: 48 * 2**20, large: 900 * 2**30}
    monkeypatch.setattr(transfer, "session_roots", lambda: [small, large])
    monkeypatch.setattr(client, "session_roots", lambda: [small, large])
    monkeypatch.setattr(transfer, "free_bytes", lambda root: free[Path(root)])
    big_ct = sitk.Image([300, 300, 90], sitk.sitkFloat32)  # 32 MB in, 65 MB of maps back: not in 48 MB
    assert transfer.transfer_bytes({"ct": big_ct}) == 300 * 300 * 90 * 12
    process = InferenceProcess(command=SERVE)
    assert process._session_dir(transfer.transfer_bytes({"ct": big_ct})).parent == large
    assert process._session_dir(transfer.transfer_bytes(inputs)).parent == small  # a small case still fits
    process.shutdown()
    free[large] = 10 * 2**20
    with pytest.raises(ReactKDError, match=r"needs 93 MiB, free: .*shm 48 MiB, .*tmp 10 MiB"):
        transfer.choose_root(transfer.transfer_bytes({"ct": big_ct}))
    assert not any(small.iterdir()) and not any(large.iterdir())


def test_raw_volumes_keep_type_values_and_geometry_exactly(tmp_path):
    ct, mask, _ = make_case(shape_zyx=(9, 11, 13), spacing=(0.71, 0.93, 3.3), origin=(-12.25, 7.125, 401.5))
    for image, labels in ((ct, False), (mask, True), (sitk.Cast(ct, sitk.sitkInt16), False)):
        back = transfer.read_volume(transfer.write_volume(image, tmp_path / "v.raw"), "v", labels=labels)
        assert back.GetSpacing() == image.GetSpacing() and back.GetOrigin() == image.GetOrigin()
        assert back.GetDirection() == image.GetDirection()
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
        assert back.GetPixelID() == (image.GetPixelID() if labels else sitk.sitkFloat32)
        (tmp_path / "v.raw").unlink()


@pytest.mark.parametrize(("change", "message"), [
    ({"dtype": "<c8"}, "voxel type"), ({"dtype": None}, "voxel type"), ({"size": [9, 11]}, "size must be 3"),
    ({"size": [9, 11, True]}, "size must be 3"), ({"size": [13, 11, 10]}, "expected"),
    ({"size": [10**6, 10**6, 10**6]}, "too large"), ({"spacing": ["1", 1, 1]}, "spacing must be 3 numbers"),
    ({"origin": [0, 0, float("nan")]}, "origin is not finite"), ({"spacing": [0, 1, 1]}, "spacing"),
    ({"direction": [1, 0, 0, 0, 1, 0, 0, 0, 2]}, "orthonormal"), ({"raw": 7}, "names no voxel file"),
    ("fifo", "not a regular file"), ("symlink", "cannot be opened"), ("missing", "cannot be opened"),
])
def test_hostile_raw_descriptors_are_one_line_errors(tmp_path, change, message):
    ct, _, _ = make_case(shape_zyx=(9, 11, 13))
    spec = transfer.write_volume(ct, tmp_path / "ct.raw")
    if change == "fifo":
        os.mkfifo(tmp_path / "pipe.raw")
        spec["raw"] = str(tmp_path / "pipe.raw")
    elif change == "symlink":
        (tmp_path / "link.raw").symlink_to(tmp_path / "ct.raw")
        spec["raw"] = str(tmp_path / "link.raw")
    elif change == "missing":
        spec["raw"] = str(tmp_path / "absent.raw")
    else:
        spec.update(change)
    with pytest.raises(ReactKDError, match=message) as caught:
        transfer.read_volume(spec, "CT")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("CT: ")
