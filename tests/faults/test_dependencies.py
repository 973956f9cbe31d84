"""Dependencies failing under a running worker: Redis stopped (both policies), Redis slow, the
dead-letter topic too small for a dead letter, the model registry unavailable at start."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core import metrics
from services.core.errors import RegistryUnavailable
from streams.runtime import scoring_worker
from tests.faults.harness import (
    InProcessWorker,
    OwnRedis,
    SlowProxy,
    account,
    garbage_items,
    good_items,
    outputs_count,
    read_topic,
    record,
    send,
    wait_accounted,
    wait_for,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, limit_message_bytes, make_pipeline

pytestmark = [pytest.mark.integration]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    yield server
    server.close()


def _pipeline(stack: Stack, tmp_path: Path, redis_url: str, **redis: Any) -> Pipeline:
    settings = stack.settings.redis.model_dump()
    return next(
        make_pipeline(
            stack,
            tmp_path,
            redis={**settings, "url": redis_url, **redis},
            worker={"scoring_group": f"g-{tmp_path.name}", "liveness_seconds": 3.0},
        )
    )


def _value(metric: Any) -> float:
    return float(metric._value.get())


@pytest.mark.parametrize(
    "policy",
    ["pause", pytest.param("degrade", marks=pytest.mark.faults)],
)
def test_redis_stopped_for_ten_seconds(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis, policy: str
) -> None:
    p = _pipeline(stack, tmp_path, own_redis.url, unavailable_policy=policy)
    started = time.monotonic()
    worker = InProcessWorker(lambda: scoring_worker(p.settings), idle_timeout=None)
    sent = send(p, good_items(p, 1000, start=0))
    wait_for(lambda: outputs_count(p) >= 1000, 120, "the first 1,000 outputs")
    own_redis.stop()
    outage = time.monotonic()
    held, oldest = 0.0, 0.0
    producer = threading.Thread(
        target=lambda: sent.extend(send(p, good_items(p, 1000, start=1000), rate=200))
    )
    producer.start()
    while time.monotonic() - outage < 10:
        held = max(held, _value(metrics.INPUT_HELD))
        oldest = max(oldest, time.monotonic() - worker.worker.last_loop)
        assert worker.thread.is_alive(), worker.error
        time.sleep(0.05)  # sampling the worker's liveness while Redis is down
    own_redis.start()
    producer.join(60)
    wait_accounted(p, sent, 120)
    worker.stop()
    tally = account(p, sent)
    assert tally.sent == 2000 and tally.lost == 0
    assert oldest < p.settings.worker.liveness_seconds  # /healthz stayed 200 throughout
    if policy == "pause":
        assert held == 1 and tally.degraded == 0 and tally.predicted == 2000
        observed = "input held, no worker restart, all scored once Redis answered"
    else:
        assert held == 0 and tally.degraded > 0 and tally.predicted == 2000
        observed = f"{tally.degraded} scored with defaults during the outage"
    record(
        f"Redis stopped 10 s, policy `{policy}` (events keep coming)",
        "pause: hold input, retry until Redis answers; degrade: defaults flagged degraded; "
        "liveness stays OK",
        observed + f"; loop never silent for more than {oldest:.1f} s",
        tally,
        time.monotonic() - started,
    )


def test_slow_redis(stack: Stack, tmp_path: Path, own_redis: OwnRedis) -> None:
    proxy = SlowProxy(own_redis.port, delay=0.02)
    try:
        p = _pipeline(stack, tmp_path, f"redis://127.0.0.1:{proxy.port}/0")
        started = time.monotonic()
        sent = send(p, good_items(p, 2000, start=0))
        summary = scoring_worker(p.settings).run(max_events=2000, idle_timeout=30)
        tally = account(p, sent)
        assert summary.consumed == 2000 and tally.lost == 0 and tally.predicted == 2000
        record(
            "slow Redis (20 ms added per network read, each way)",
            "slower batches, nothing lost or degraded",
            f"{summary.batches} batches, {tally.degraded} degraded",
            tally,
            time.monotonic() - started,
        )
    finally:
        proxy.close()


def test_dead_letter_topic_smaller_than_a_dead_letter(stack: Stack, tmp_path: Path) -> None:
    """The topic's max.message.bytes is 20 KB; originals of 100 KB cannot be kept. Each dead
    letter is sent again without its original, and the worker goes on."""
    p = next(make_pipeline(stack, tmp_path))
    dlq = f"{p.settings.topics.events}.dlq"
    limit_message_bytes(stack.admin(), dlq, 20_000)
    started = time.monotonic()
    stripped = _value(metrics.DEAD_LETTERS_CUT)
    items = good_items(p, 300, start=0) + garbage_items(50, size=100_000)
    sent = send(p, items)
    summary = scoring_worker(p.settings).run(max_events=len(items), idle_timeout=30)
    tally = account(p, sent)
    assert summary.consumed == 350 and tally.lost == 0
    assert (tally.predicted, tally.dead_lettered) == (300, 50)
    assert _value(metrics.DEAD_LETTERS_CUT) - stripped == 50
    record(
        "dead-letter topic with max.message.bytes 20 KB, originals of 100 KB",
        "dead letter refused for its size is sent again without the original; no crash",
        "50 dead letters written without their originals (streamscore_dead_letters_stripped_total)",
        tally,
        time.monotonic() - started,
    )


def test_registry_unavailable_at_worker_start(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    p = next(make_pipeline(stack, tmp_path))
    cache = tmp_path / "model-cache"
    settings = p.settings.model_copy(
        update={"model": p.settings.model.model_copy(update={"cache_dir": cache})}
    )
    started = time.monotonic()
    sent = send(p, good_items(p, 300, start=0))
    scoring_worker(settings).run(max_events=300, idle_timeout=30)  # verified, and copied
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = settings.model.model_copy(update={"tracking_uri": closed})
    outage = settings.model_copy(update={"model": down})
    local_copy = _value(metrics.FALLBACKS.labels(reason="local_copy"))
    sent += send(p, good_items(p, 300, start=300))
    summary = scoring_worker(outage).run(max_events=300, idle_timeout=30)
    assert summary.predictions == 300
    assert _value(metrics.FALLBACKS.labels(reason="local_copy")) == local_copy + 1
    empty = down.model_copy(update={"cache_dir": tmp_path / "empty"})
    with pytest.raises(RegistryUnavailable, match="refusing to start"):
        scoring_worker(settings.model_copy(update={"model": empty}))
    tally = account(p, sent)
    assert tally.lost == 0 and tally.predicted == 600
    decoded = [p.codec("Prediction").decode_one(m.value()) for m in read_topic(p, "Prediction")]
    versions = {d["model_version"] for d in decoded if isinstance(d, dict)}
    assert versions == {p.trained.version}
    record(
        "model registry unreachable at worker start",
        "serve the verified local copy of what was served last; without one, refuse to start",
        "served the champion from the local copy; a worker without a copy refused to start",
        tally,
        time.monotonic() - started,
    )


def test_schema_registry_unavailable_is_retried(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Schema Registry not answering is transient: the batch is retried (it used to crash
    the worker). The outage is injected in the codec's id lookups, the only registry calls on
    the hot path; Kafka and Redis are real."""
    from services.core.errors import SchemaRegistryUnavailable

    p = next(make_pipeline(stack, tmp_path))
    worker = scoring_worker(p.settings)
    real = worker.stages.codec.decode_many
    failures = iter([True, True, True])

    def flaky(values: Any) -> Any:
        if next(failures, False):
            raise SchemaRegistryUnavailable("schema registry unreachable: connection refused")
        return real(values)

    monkeypatch.setattr(worker.stages.codec, "decode_many", flaky)
    before = _value(metrics.DEPENDENCY_FAILURES.labels(dependency="schema_registry"))
    started = time.monotonic()
    sent = send(p, good_items(p, 300, start=0))
    summary = worker.run(max_events=300, idle_timeout=30)
    tally = account(p, sent)
    assert summary.predictions == 300 and tally.lost == 0 and tally.duplicated == 0
    assert _value(metrics.DEPENDENCY_FAILURES.labels(dependency="schema_registry")) == before + 3
    record(
        "schema registry unavailable for three attempts",
        "the batch is retried with backoff (input held after 5 attempts), never dropped",
        "scored after the third retry; no restart",
        tally,
        time.monotonic() - started,
    )


def test_a_batch_larger_than_the_producer_queue(stack: Stack, tmp_path: Path) -> None:
    """The producer's local queue holds 50 messages and a batch has 1,000 outputs: each
    produce that finds it full waits for the broker (BufferError used to crash the worker)."""
    from confluent_kafka import Producer

    from services.kafka.config import producer_config

    p = next(make_pipeline(stack, tmp_path, batch={"max_messages": 1000}))
    worker = scoring_worker(p.settings)
    small = Producer(producer_config(p.settings, **{"queue.buffering.max.messages": 50}))
    worker.producer = worker.outputs.producer = worker.membership.producer = small
    started = time.monotonic()
    sent = send(p, good_items(p, 2000, start=0) + garbage_items(100))
    summary = worker.run(max_events=2100, idle_timeout=30)
    tally = account(p, sent)
    assert summary.consumed == 2100 and tally.lost == 0 and tally.duplicated == 0
    assert (tally.predicted, tally.dead_lettered) == (2000, 100)
    record(
        "a batch's outputs overflow the producer's local queue (50 messages, batches of 1,000)",
        "produce waits for the broker to drain the queue (bounded, 60 s), then goes on",
        f"{summary.batches} batches, no error",
        tally,
        time.monotonic() - started,
    )


@pytest.mark.faults
def test_redis_down_while_a_second_worker_joins(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis
) -> None:
    """Redis stops, input is held, and meanwhile a second worker joins: the rebalance moves
    partitions under a held batch. The held batch is dropped and its partitions rewound, never
    skipped; once Redis answers, every event is scored."""
    from tests.faults.harness import WorkerProcess, wait_accounted

    p = _pipeline(stack, tmp_path, own_redis.url, unavailable_policy="pause")
    started = time.monotonic()
    first = InProcessWorker(lambda: scoring_worker(p.settings), idle_timeout=None)
    sent = send(p, good_items(p, 1000, start=0))
    wait_accounted(p, sent, 120)
    own_redis.stop()
    sent += send(p, good_items(p, 1000, start=1000))
    wait_for(lambda: _value(metrics.INPUT_HELD) == 1, 60, "input held")
    rebalances = first.worker.summary.rebalances
    second = WorkerProcess(p, tmp_path, "second")
    second.wait_assigned()
    # The group moved partitions while the first worker held its batch.
    wait_for(lambda: first.worker.summary.rebalances > rebalances, 60, "the rebalance")
    own_redis.start()
    sent += send(p, good_items(p, 1000, start=2000))
    tally = wait_accounted(p, sent, 180)
    assert second.stop() == 0
    first.stop()
    assert tally.lost == 0 and tally.predicted == 3000
    record(
        "Redis down while a second worker joins (policy `pause`)",
        "the held batch is dropped and rewound across the rebalance; all scored after",
        f"{tally.duplicated} duplicates",
        tally,
        time.monotonic() - started,
    )


def test_a_consumer_that_never_rejoins_is_replaced(stack: Stack, tmp_path: Path) -> None:
    """After a broker restart longer than the session timeout, librdkafka sometimes leaves a
    consumer without partitions for good (seen in `make faults`: coordinator requests queued for
    minutes). That state is set here as it was seen; the worker replaces its consumer and the
    new one scores everything."""
    from streams.worker import membership as module

    p = next(make_pipeline(stack, tmp_path))
    worker = scoring_worker(p.settings)
    before = _value(metrics.CONSUMER_REBUILDS)
    stuck = worker.membership.consumer
    worker.membership.lost_at = time.monotonic() - module.REJOIN_SECONDS - 1
    started = time.monotonic()
    sent = send(p, good_items(p, 500, start=0))
    summary = worker.run(max_events=500, idle_timeout=30)
    assert worker.membership.consumer is not stuck
    assert _value(metrics.CONSUMER_REBUILDS) == before + 1
    tally = account(p, sent)
    assert summary.predictions == 500 and tally.lost == 0
    record(
        "a consumer left without partitions after it lost them (never rejoins)",
        "replaced by a new consumer after a minute; the new one joins and scores",
        "replaced once; every event scored",
        tally,
        time.monotonic() - started,
    )
