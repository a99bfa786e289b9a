"""TrainingRunner against a fake ``reactkd`` child: progress order, errors, cancel of the whole process
tree, registration of the trained package."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from reactkd.errors import ConfigError
from reactkd.package.catalog import ModelCatalog
from REACTKDTrainingLib.runner import TrainingRunner, reactkd_search_path, slicer_python_executable

FAKE_CHILD = textwrap.dedent('''
    import json, os, subprocess, sys, time

    def say(**event):
        print(json.dumps(event), flush=True)

    mode = os.environ["FAKE_MODE"]
    args = sys.argv[1:]
    out = args[args.index("--out") + 1] if "--out" in args else None
    if mode == "args":
        say(event="start", argv=args, pythonpath=os.environ.get("PYTHONPATH", ""),
            unbuffered=os.environ.get("PYTHONUNBUFFERED"))
    elif mode in ("ok", "no-package"):
        say(event="start", stage="student", epochs=1)
        for step in range(3):
            say(event="step", epoch=0, step=step, steps=3, loss={"total": 1.0 / (step + 1)}, eta_s=3 - step)
        print("a plain log line", flush=True)
        say(event="epoch", epoch=0, metrics={"auc": 0.75})
        if mode == "ok":
            os.makedirs(out, exist_ok=True)
            open(os.path.join(out, "model.safetensors"), "wb").write(b"weights")
            json.dump({"name": "fake-student", "version": "0.1", "sha256": "", "input_modalities": ["ct"],
                       "class_names": ["well", "moderate", "poor"]}, open(os.path.join(out, "metadata.json"), "w"))
        say(event="done", model_dir=out)
    elif mode == "fail":
        say(event="start")
        print("warning: something odd", file=sys.stderr)
        print("error: manifest.csv row 3: unknown label '7'", file=sys.stderr)
        print("trailing noise", file=sys.stderr)
        sys.exit(2)
    elif mode == "hang":
        grandchild = (
            "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
        subprocess.Popen([sys.executable, "-c", grandchild, os.environ["FAKE_PIDS"] + ".grandchild"])
        open(os.environ["FAKE_PIDS"] + ".child", "w").write(str(os.getpid()))
        say(event="start")
        time.sleep(120)
''')


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie may linger until PID 1 reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_reactkd.py"
    script.write_text(FAKE_CHILD)

    def make(mode: str, **kwargs) -> TrainingRunner:
        env = {**os.environ, "FAKE_MODE": mode, "FAKE_PIDS": str(tmp_path / "pid")}
        return TrainingRunner(command=[sys.executable, str(script)], env=env, **kwargs)

    return make


@pytest.fixture
def catalog(tmp_path, permissive_verifier):
    return ModelCatalog(user_file=tmp_path / "home/models.json", shipped_file=tmp_path / "none.json")


def test_progress_reaches_callback_in_order_and_model_is_registered(fake, tmp_path, catalog):
    events = []
    handle = fake("ok").train("student", tmp_path / "m.csv", tmp_path / "out", progress=events.append,
                              catalog=catalog)
    assert handle.returncode == 0 and handle.error_message is None
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "step", "step", "step", "log", "epoch", "done", "registered"]
    assert [e["step"] for e in events if e["event"] == "step"] == [0, 1, 2]
    assert events[1]["loss"] == {"total": 1.0} and events[5]["metrics"] == {"auc": 0.75}
    assert handle.model_dir == tmp_path / "out" and events == handle.events
    entry = catalog.get("fake-student")
    assert handle.registered == entry and entry.path == (tmp_path / "out").resolve()
    assert events[-1] == {"event": "registered", "name": "fake-student", "path": str(entry.path)}


def test_failed_run_reports_error_line_and_registers_nothing(fake, tmp_path, catalog):
    handle = fake("fail").train("student", "m.csv", tmp_path / "out", catalog=catalog)
    assert handle.returncode == 2
    handle.cancel()  # too late: must not hide the failure
    assert not handle.cancelled and handle.returncode == 2
    assert handle.error_message == "manifest.csv row 3: unknown label '7'"
    assert "trailing noise" in handle.stderr_lines and handle.registered is None
    assert catalog.user_entries() == []


def test_success_without_package_reports_registration_error(fake, tmp_path, catalog):
    events = []
    handle = fake("no-package").train("student", "m.csv", tmp_path / "out", progress=events.append,
                                      catalog=catalog)
    assert handle.returncode == 0 and handle.registered is None
    assert events[-1]["event"] == "error" and "model not registered" in events[-1]["message"]
    assert "model not registered" in handle.error_message


def test_cancel_kills_child_and_grandchild(fake, tmp_path):
    started = threading.Event()
    handle = fake("hang").run(["train"], progress=lambda e: started.set(), wait=False)
    pid_files = [tmp_path / "pid.child", tmp_path / "pid.grandchild"]
    deadline = time.monotonic() + 20
    while not (started.is_set() and all(p.exists() and p.read_text() for p in pid_files)):
        assert time.monotonic() < deadline, "fake child did not start"
        time.sleep(0.05)
    child, grandchild = (int(p.read_text()) for p in pid_files)
    try:
        assert alive(child) and alive(grandchild) and not handle.done
        t0 = time.monotonic()
        handle.cancel(grace_s=1.0)  # the grandchild ignores SIGTERM: only SIGKILL stops it
        assert time.monotonic() - t0 < 10
        deadline = time.monotonic() + 5
        while alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child) and not alive(grandchild)
        assert handle.wait(timeout=10) != 0 and handle.cancelled and handle.error_message is None
    finally:  # never leave a sleeper behind when an assertion fails
        for pid in (child, grandchild):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_queued_callbacks_run_on_the_waiting_thread(fake, tmp_path, catalog):
    threads, polls = set(), []
    handle = fake("ok", callbacks_in_thread=False).train(
        "student", "m.csv", tmp_path / "out", progress=lambda e: threads.add(threading.get_ident()),
        wait=False, catalog=catalog)
    assert handle.wait(timeout=30, poll=lambda: polls.append(1)) == 0
    assert threads == {threading.get_ident()} and len(handle.events) == 8


def test_faulty_callback_does_not_stop_the_run(fake, tmp_path, catalog):
    def explode(event):
        raise RuntimeError("callback bug")

    handle = fake("ok").train("student", "m.csv", tmp_path / "out", progress=explode, catalog=catalog)
    assert handle.returncode == 0 and handle.events[-1]["event"] == "registered"


def test_command_lines_and_child_environment(fake, tmp_path):
    runner = fake("args")
    train = runner.train("teacher-sf", "m.csv", "out", config="c.yaml", extra_args=["--epochs", 2],
                         register=False)
    evaluate = runner.evaluate("m.csv", "model", "eval", doses=[1, 0.5, 0.25], modalities=["ct", "all"])
    assert train.events[0]["argv"] == ["train", "--stage", "teacher-sf", "--manifest", "m.csv", "--out", "out",
                                       "--config", "c.yaml", "--epochs", "2", "--progress", "json"]
    assert evaluate.events[0]["argv"] == ["evaluate", "--manifest", "m.csv", "--model", "model", "--out",
                                          "eval", "--doses", "1,0.5,0.25", "--modalities", "ct,all",
                                          "--progress", "json"]
    assert evaluate.events[0]["pythonpath"].split(os.pathsep)[0] == reactkd_search_path()
    assert evaluate.events[0]["unbuffered"] == "1"
    assert Path(reactkd_search_path(), "reactkd", "__init__.py").is_file()


def test_default_command_is_python_m_reactkd(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!{sys.executable}\nimport json, sys\n"
                           "print(json.dumps({'event': 'start', 'argv': sys.argv[1:]}))\n")
    fake_python.chmod(0o755)
    handle = TrainingRunner().run(["synth", "--out", "x"], python=str(fake_python))
    assert handle.events[0]["argv"] == ["-m", "reactkd", "synth", "--out", "x", "--progress", "json"]
    plain = TrainingRunner(python=str(fake_python)).run(["synth", "--out", "x"], json_progress=False)
    assert plain.events[0]["argv"] == ["-m", "reactkd", "synth", "--out", "x"]


def test_unknown_stage_is_refused_before_starting(fake):
    with pytest.raises(ConfigError, match="teacher-sf"):
        fake("ok").train("teacher", "m.csv", "out")


def test_slicer_python_is_found_beside_the_interpreter_or_on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    interpreter = bindir / "python-real"
    interpreter.write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert slicer_python_executable(str(interpreter)) == str(interpreter)
    (bindir / "PythonSlicer").write_text("")
    assert slicer_python_executable(str(interpreter)) == str(bindir / "PythonSlicer")


@pytest.mark.slow
def test_real_cli_reports_bad_input_as_one_error_line(tmp_path):
    """The real ``python -m reactkd train`` (contract: exit 2 and one ``error:`` line for bad input)."""
    handle = TrainingRunner().train("student", tmp_path / "missing.csv", tmp_path / "out", register=False)
    assert handle.returncode == 2, "\n".join(handle.stderr_lines)
    assert handle.error_message and not any(line.startswith("Traceback") for line in handle.stderr_lines)
