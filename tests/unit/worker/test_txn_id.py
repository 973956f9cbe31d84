"""Under exactly_once the worker warns once, at start, when its transactional id changes from one
process to the next (a restart could then not fence its predecessor)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from services.core.settings import Settings
from streams.worker import transactional
from streams.worker.txn_id import unstable


class FakeProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def init_transactions(self, timeout: float) -> None:
        pass


def _start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, **worker: Any
) -> list[str]:
    monkeypatch.setattr(transactional, "Producer", FakeProducer)
    settings = Settings(worker={"processing_guarantee": "exactly_once", **worker})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streams.worker"):
        transactional.worker_producer(settings, worker.get("worker_id") or "host-4242")
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_default_worker_id_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (line,) = _start(monkeypatch, caplog)
    assert line.startswith(
        "exactly-once: transactional id streamscore-scoring-host-4242 is not the same across "
        "restarts (it ends in the default worker id <hostname>-<pid>"
    )
    assert "STREAMSCORE_WORKER__WORKER_ID" in line and "StatefulSet" in line


def test_a_statefulset_pod_name_is_not_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert _start(monkeypatch, caplog, worker_id="streamscore-scoring-2") == []
    assert _start(monkeypatch, caplog, transactional_id="eos-scoring-2") == []


def test_a_deployment_pod_name_or_a_random_id_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (line,) = _start(monkeypatch, caplog, worker_id="streamscore-scoring-6b7f9c8d54-zx2kq")
    assert "a Deployment pod's name" in line
    (line,) = _start(monkeypatch, caplog, transactional_id="w-0f3c2a9b8e7d6c5b4a39")
    assert "a random id" in line


def test_at_least_once_never_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transactional, "Producer", FakeProducer)
    with caplog.at_level(logging.WARNING, logger="streams.worker"):
        transactional.worker_producer(Settings(), "host-4242")
    assert caplog.records == []


def test_names_people_give_are_stable() -> None:
    for tid in ("streamscore-scoring-scoring-0", "eos-0", "streamscore-scoring-node7-2"):
        assert unstable(tid, worker_id_set=True, tid_set=False) is None, tid
