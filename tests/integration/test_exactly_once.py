"""Exactly-once on Apache Kafka: a worker SIGKILLed mid-stream and started again leaves no
duplicate to a read_committed consumer (the fault kit runs the longer cases, tests/faults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import metrics
from streams.runtime import scoring_worker
from tests.faults.harness import (
    WorkerProcess,
    account,
    garbage_items,
    good_items,
    outputs_count,
    read_topic,
    send,
    wait_for,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import limit_message_bytes, make_pipeline, with_guarantee

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


def test_a_dead_letter_too_large_for_its_topic_is_cut_inside_the_transaction(
    stack: Stack, tmp_path: Path
) -> None:
    """The dead-letter topic's max.message.bytes is 20 KB and the originals 100 KB: the broker
    refuses such a dead letter inside the batch's transaction, which then cannot commit. The
    batch is aborted once and written again with those dead letters cut (reason kept, original
    dropped and marked), in the transaction: every input accounted for once, none twice, and
    no dead letter written outside a transaction."""
    p = with_guarantee(next(make_pipeline(stack, tmp_path)), "exactly_once")
    dlq = f"{p.settings.topics.events}.dlq"
    limit_message_bytes(stack.admin(), dlq, 20_000)
    cut_before = metrics.DEAD_LETTERS_CUT._value.get()
    items = good_items(p, 300, start=0) + garbage_items(50, size=100_000)
    sent = send(p, items)
    summary = scoring_worker(p.settings).run(max_events=len(items), idle_timeout=30)
    tally = account(p, sent)
    assert summary.consumed == len(items)
    assert (tally.lost, tally.predicted, tally.dead_lettered, tally.duplicated) == (0, 300, 50, 0)
    assert metrics.DEAD_LETTERS_CUT._value.get() - cut_before >= 50  # again in an aborted try
    letters = read_topic(p, "DeadLetter")
    assert len(letters) == 50  # a letter written outside a transaction would show here too
    codec = p.codec("DeadLetter")
    for m in letters:
        record = codec.decode_one(m.value())
        assert isinstance(record, dict), record
        assert record["original_value"] is None and record["reason"], record
        assert "[original truncated: original dropped to fit" in record["detail"]
