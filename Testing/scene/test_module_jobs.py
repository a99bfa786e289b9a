"""Background classification of the REACTKD module (worker thread, classifier cache, cancel, errors), with a
stand-in classifier so the thread logic is tested without a network."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")  # reactkd.scene imports slicer

from reactkd.errors import MaskError  # noqa: E402
from reactkd.scene.module_jobs import ClassificationJob, ClassifierCache, make_executor  # noqa: E402


class FakeClassifier:
    def __init__(self, folder, device, gate: threading.Event | None = None, error: Exception | None = None):
        self.folder, self.device, self.gate, self.error = folder, device, gate, error
        self.calls = 0

    def classify(self, ct, mask, pet_fdg=None, pet_act=None):
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return {"ct": ct, "mask": mask, "pet_fdg": pet_fdg, "pet_act": pet_act}


def counting_factory(**kwargs):
    built = []

    def factory(folder, device):
        built.append((folder, device))
        return FakeClassifier(folder, device, **kwargs)

    return factory, built


def test_cache_loads_each_model_and_device_once(tmp_path):
    factory, built = counting_factory()
    cache = ClassifierCache(factory)
    first = cache.get(tmp_path / "a", "auto")
    assert cache.get(tmp_path / "a" / ".." / "a", " AUTO ") is first
    assert cache.get(tmp_path / "a", "cpu") is not first
    assert cache.get(tmp_path / "b", "auto") is not first
    assert [device for _, device in built] == ["auto", "cpu", "auto"]
    cache.forget(tmp_path / "a")
    assert not cache.is_loaded(tmp_path / "a", "auto") and cache.is_loaded(tmp_path / "b", "auto")
    cache.forget()
    assert not cache.is_loaded(tmp_path / "b", "auto")


def test_job_classifies_in_a_worker_thread_and_reuses_the_classifier(tmp_path):
    factory, built = counting_factory()
    cache = ClassifierCache(factory)
    inputs = {"ct": "CT", "mask": "MASK", "pet_act": "ACT"}
    with make_executor() as executor:
        jobs = [ClassificationJob(cache, tmp_path, "cpu", inputs, executor) for _ in range(2)]
        assert all(job.wait(5) for job in jobs)
    assert [job.result() for job in jobs] == [{"ct": "CT", "mask": "MASK", "pet_fdg": None, "pet_act": "ACT"}] * 2
    assert len(built) == 1 and jobs[0].classifier is jobs[1].classifier and jobs[0].classifier.calls == 2
    assert jobs[0].stage == "done" and jobs[0].progress == 1.0


def test_wait_returns_while_the_worker_is_busy_and_cancel_discards_the_result(tmp_path):
    gate = threading.Event()
    factory, _ = counting_factory(gate=gate)
    with make_executor() as executor:
        job = ClassificationJob(ClassifierCache(factory), tmp_path, "cpu", {"ct": 1, "mask": 2}, executor)
        queued = ClassificationJob(ClassifierCache(factory), tmp_path, "cpu", {"ct": 1, "mask": 2}, executor)
        assert not job.wait(0.05) and not job.done()
        job.cancel()
        queued.cancel()  # still queued behind the first: never runs
        gate.set()
        assert job.wait(5) and queued.wait(5)
    assert job.result() is None and queued.result() is None
    assert job.classifier.calls == 1 and queued.classifier is None


def test_worker_errors_reach_the_caller(tmp_path):
    factory, _ = counting_factory(error=MaskError("tumour segment is empty"))
    with make_executor() as executor:
        job = ClassificationJob(ClassifierCache(factory), tmp_path, "cpu", {"ct": 1, "mask": 2}, executor)
        assert job.wait(5)
    with pytest.raises(MaskError, match="tumour segment is empty"):
        job.result()
