"""The orphan-folder sweep never trusts a name: anyone can create `/dev/shm/reactkd-inference-<anything>` (or
a staging name in a shared --out), so only real folders of this user with a pid this system can have are
removed, and no name makes the sweep (or a classification after it) raise."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from reactkd.atomic import pid_alive, remove_orphan_folders, remove_stale_staging
from reactkd.inference import client, transfer
from reactkd.inference.client import InferenceProcess, remove_stale_sessions

PREFIX = "reactkd-inference-"


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (so the sweep may remove its folders)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


HOSTILE = ["31415926535897932384626-x", "340282366920938463463374607431768211456-y", "0-z", "-7-a", "00000-b",
           "\u0663\u0663-c", "\u00b2\u00b3-d", "12 -e", "+12-f", "9" * 200 + "-g"]


@pytest.mark.parametrize("tail", HOSTILE)
def test_hostile_session_names_are_skipped_not_raised(tmp_path, tail):
    folder = tmp_path / f"{PREFIX}{tail}"
    folder.mkdir()
    assert remove_stale_sessions(tmp_path) == []
    assert folder.is_dir()


@pytest.mark.parametrize("tail", ["31415926535897932384626-x", "0-z", "00000-b", "9" * 200 + "-g"])
def test_staging_names_with_an_impossible_pid_are_kept_and_the_outputs_written(tmp_path, tail):
    from reactkd.inference.outputs import write_outputs
    from reactkd.inference.result import ClassificationResult

    planted = tmp_path / f".reactkd-out-{tail}"
    planted.mkdir()
    assert remove_stale_staging(tmp_path) == [] and planted.is_dir()
    image = sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32))
    result = ClassificationResult("poor", 2, ["well", "moderate", "poor"], {"well": 0.1, "moderate": 0.1, "poor": 0.8},
                                  image, image, {"nodes": []}, {"name": "m"}, "cpu", ["ct"], {})
    written = write_outputs(result, tmp_path, image, image, render=False)  # its own sweep runs first
    assert "result.json" in written and planted.is_dir()


def test_only_real_folders_of_dead_processes_are_removed(tmp_path, dead_pid):
    orphan = tmp_path / f"{PREFIX}{dead_pid}-mine"
    (orphan / "request-3").mkdir(parents=True)
    target = tmp_path / "kept-target"
    target.mkdir()
    link = tmp_path / f"{PREFIX}{dead_pid}-link"
    link.symlink_to(target, target_is_directory=True)
    plain_file = tmp_path / f"{PREFIX}{dead_pid}-file"
    plain_file.write_text("not a folder")
    assert remove_stale_sessions(tmp_path) == [orphan]
    assert not orphan.exists() and link.is_symlink() and target.is_dir() and plain_file.is_file()


@pytest.mark.skipif(not hasattr(os, "chown") or os.geteuid() != 0, reason="needs root to give a folder away")
def test_folders_of_another_user_are_never_removed(tmp_path, dead_pid):
    foreign = tmp_path / f"{PREFIX}{dead_pid}-theirs"
    foreign.mkdir()
    os.chown(foreign, 4242, 4242)
    assert remove_orphan_folders(tmp_path, PREFIX) == [] and foreign.is_dir()


def test_folders_of_another_user_are_never_removed_as_seen_by_that_user(tmp_path, dead_pid, monkeypatch):
    folder = tmp_path / f"{PREFIX}{dead_pid}-ours"
    folder.mkdir()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(folder).st_uid + 1)  # as another user sees our folder
    assert remove_orphan_folders(tmp_path, PREFIX) == [] and folder.is_dir()


@pytest.mark.parametrize("pid", [0, -3, 2**31, 10**20, 2**63, 2**200])
def test_pid_alive_never_raises_and_keeps_what_it_cannot_tell(pid):
    assert pid_alive(pid) is True


def test_a_planted_name_does_not_stop_the_next_session(tmp_path, monkeypatch):
    planted = tmp_path / f"{PREFIX}{'7' * 25}-planted"
    planted.mkdir()
    monkeypatch.setattr(transfer, "session_roots", lambda: [tmp_path])
    monkeypatch.setattr(client, "session_roots", lambda: [tmp_path])
    process = InferenceProcess(command=[sys.executable, "-c", "pass"])
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    session = process._session_dir(transfer.transfer_bytes({"ct": image}))
    assert session.parent == tmp_path and session.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert planted.is_dir()
    process.shutdown()
    assert not session.exists() and planted.is_dir()
