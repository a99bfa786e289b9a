"""reactkd.processes.stop_process_group: the Windows path (CTRL_BREAK that cannot be delivered, taskkill
without a console window) with a recorded process and taskkill, and the exit-time kill of a stop still under
way in a daemon thread (Slicer closing during a request), with a real child."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from reactkd import processes


class ConsolelessChild:
    """A CREATE_NO_WINDOW child as Windows sees it: CTRL_BREAK cannot reach it, taskkill ends it."""

    pid = 4321

    def __init__(self):
        self.alive, self.waits = True, []

    def send_signal(self, sig):
        raise OSError(87, "The parameter is incorrect")

    def poll(self):
        return None if self.alive else 1

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if self.alive and timeout is not None:
            raise subprocess.TimeoutExpired("child", timeout)

    def kill(self):
        self.alive = False


def test_windows_kills_at_once_without_a_console_window(monkeypatch):
    child, runs = ConsolelessChild(), []

    def taskkill(argv, **options):
        runs.append((argv, options))
        child.alive = False

    monkeypatch.setattr(processes.os, "name", "nt")
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", 1, raising=False)
    monkeypatch.setattr(processes.subprocess, "run", taskkill)
    started = time.monotonic()
    processes.stop_process_group(child, grace_s=30.0)
    assert time.monotonic() - started < 5.0 and child.waits == [None]  # no grace wait for a signal never sent
    (argv, options), = runs
    assert argv[:3] == ["taskkill", "/T", "/F"] and argv[-1] == str(child.pid)
    assert options["creationflags"] & 0x08000000  # CREATE_NO_WINDOW: no console flashes up
    assert not processes._STOPPING


def test_windows_without_taskkill_still_kills_the_child(monkeypatch):
    child = ConsolelessChild()

    def missing(argv, **options):
        raise FileNotFoundError(2, "taskkill")

    monkeypatch.setattr(processes.os, "name", "nt")
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", 1, raising=False)
    monkeypatch.setattr(processes.subprocess, "run", missing)
    processes.stop_process_group(child, grace_s=0.1)
    assert not child.alive


def test_a_stop_under_way_at_exit_is_finished_by_a_kill():
    """As REACTKD's cancel hands the stop to a daemon thread: the interpreter exits during the grace period
    (a child that ignores SIGTERM), and the child must not outlive it."""
    script = (
        "import subprocess, sys, threading, time\n"
        "from reactkd.processes import launch_child, stop_process_group\n"
        "child = launch_child([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)'])\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "threading.Thread(target=stop_process_group, args=(child, 30.0), daemon=True).start()\n"
        "time.sleep(0.5)\n")
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and processes.group_alive(pid):
        time.sleep(0.05)
    assert not processes.group_alive(pid), "the child outlived the interpreter that was stopping it"
