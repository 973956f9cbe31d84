"""Exactly-once on Apache Kafka: a worker SIGKILLed mid-stream and started again leaves no
duplicate to a read_committed consumer (the fault kit runs the longer cases, tests/faults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.runtime import scoring_worker
from tests.faults.harness import (
    WorkerProcess,
    account,
    good_items,
    outputs_count,
    send,
    wait_for,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline, with_guarantee

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


def test_sigkill_under_exactly_once_leaves_no_duplicate(stack: Stack, tmp_path: Path) -> None:
    """The worker is killed while it scores (commits every 10 s would leave a tail to score
    again under at_least_once); the same instance (same worker id, so the same transactional
    id) starts again, fences its predecessor, aborts what it left open and scores the rest.
    The second run is in this process (it starts faster than a second process)."""
    batch = {"max_messages": 100, "timeout_seconds": 0.05, "commit_interval_seconds": 10}
    p = with_guarantee(next(make_pipeline(stack, tmp_path, batch=batch)), "exactly_once")
    first = WorkerProcess(p, tmp_path, "first", env={"STREAMSCORE_WORKER__WORKER_ID": "eos-0"})
    first.wait_assigned()
    sent = send(p, good_items(p, 600, start=0))
    wait_for(lambda: outputs_count(p) >= 200, 60, "some outputs before the kill")
    sent += send(p, good_items(p, 600, start=600))
    first.kill()
    assert "transactional id streamscore-scoring-" in first.text()
    worker = p.settings.worker.model_copy(update={"worker_id": "eos-0"})
    again = scoring_worker(p.settings.model_copy(update={"worker": worker}))
    summary = again.run(idle_timeout=3)
    tally = account(p, sent)
    assert (tally.lost, tally.predicted, tally.duplicated) == (0, 1200, 0)
    assert 0 < summary.consumed < 1200  # the first had committed some; the rest came here
