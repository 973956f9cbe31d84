"""At-least-once across a crash: SIGKILL the worker mid-stream, restart it, and every event ends
with a prediction; any duplicate carries the same prediction id and score."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from services.kafka.config import consumer_config
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, committed_total, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    # Small batches, and commits every 5 s: the kill lands with acknowledged predictions that
    # are not committed yet, so the restart must score them again (duplicates, never gaps).
    yield from make_pipeline(
        stack,
        tmp_path,
        batch={"max_messages": 100, "timeout_seconds": 0.1, "commit_interval_seconds": 5},
    )


def _worker(p: Pipeline, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "--json", "worker", "scoring", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigkill_mid_stream_then_restart_loses_nothing(pipeline: Pipeline) -> None:
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 8000)
    values = [
        (e["user_id"].encode(), v, [])
        for e, v in zip(events, codec.encode_many(events), strict=True)
    ]

    first = _worker(pipeline)
    try:
        pipeline.produce(values[:3000])
        # The worker is up and scoring...
        deadline = time.monotonic() + 120
        while not pipeline.read("Prediction", 1, timeout=1):
            assert time.monotonic() < deadline and first.poll() is None, "worker never scored"
        # ...and is killed without warning while more input arrives.
        pipeline.produce(values[3000:5000])
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    # What the kill left: predictions Kafka holds beyond the committed offsets. Those events
    # are read again, so exactly that many duplicates must follow.
    committed = committed_total(pipeline)
    before = len(pipeline.read("Prediction", 10**9, timeout=3))
    assert before > committed, (before, committed)
    pipeline.produce(values[5000:])

    # The restart runs in this process: the same worker code, without paying for a second
    # interpreter start.
    restarted = scoring_worker(pipeline.settings).run(idle_timeout=5)
    assert restarted.consumed >= len(events) - 5000  # at least everything produced after the kill

    predictions = [
        pipeline.codec("Prediction").decode_one(m.value())
        for m in pipeline.read("Prediction", len(events))
    ]
    by_event: dict[str, list[dict[str, object]]] = defaultdict(list)
    for p in predictions:
        assert isinstance(p, dict)
        by_event[str(p["event_id"])].append(p)
    assert set(by_event) == {e["event_id"] for e in events}
    assert len(predictions) - len(events) == before - committed  # duplicates happened, exactly
    for copies in by_event.values():  # the dedupe key is event_id; one version: same id, score
        assert len({(c["prediction_id"], c["score"], c["model_version"]) for c in copies}) == 1


def test_two_workers_share_the_partitions_and_stop_cleanly_on_sigterm(pipeline: Pipeline) -> None:
    """Scale-out and shutdown: two processes in one consumer group split the input and together
    score each event; on SIGTERM each finishes its batch, commits, and exits 0, so the group's
    committed offsets reach the end of every partition."""
    import json
    import threading

    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 4000, start=90_000)
    workers = [_worker(pipeline) for _ in range(2)]
    holding = [threading.Event() for _ in workers]
    logs: list[list[str]] = [[] for _ in workers]

    def watch(i: int) -> None:
        stream = workers[i].stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            logs[i].append(line)
            if "partitions assigned:" in line and not line.rstrip().endswith("none"):
                holding[i].set()

    threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for i, flag in enumerate(holding):
        assert flag.wait(120), "".join(logs[i][-20:])
    pipeline.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    predictions = pipeline.read("Prediction", len(events), timeout=120)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    summaries = []
    for i, w in enumerate(workers):
        assert w.wait(120) == 0, "".join(logs[i][-20:])
        assert w.stdout is not None
        summaries.append(json.loads(w.stdout.read()))
        w.stdout.close()
        threads[i].join(10)
        assert w.stderr is not None
        w.stderr.close()
    assert sum(s["consumed"] for s in summaries) >= len(events)
    assert all(s["consumed"] > 0 for s in summaries), summaries
    assert all(s["consumed"] == s["predictions"] + s["dead_letters"] for s in summaries)
    probe = Consumer(consumer_config(pipeline.settings, pipeline.settings.worker.scoring_group))
    try:
        topic = pipeline.settings.topics.events
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        committed = probe.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts]
    finally:
        probe.close()
    assert [tp.offset for tp in committed] == ends
    ids = [pipeline.codec("Prediction").decode_one(m.value())["event_id"] for m in predictions]
    assert set(ids) == {e["event_id"] for e in events}
