"""Behaviour only Apache Kafka gets right (tansu approximates time lookups at batch granularity
and returns 0 for a future timestamp): checked on Kafka only."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from services.kafka.config import consumer_config, producer_config
from services.kafka.topics import TopicSpec
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


def test_offsets_for_times_finds_the_first_message_at_or_after_a_time(
    broker_kind: str, stack: Stack, topic_factory: Callable[..., TopicSpec], group_id: str
) -> None:
    topic = topic_factory(partitions=1)
    base = int(time.time() * 1000) - 60_000
    producer = Producer(producer_config(stack.settings, **{"linger.ms": 50}))
    for i in range(10):  # one batch: tansu could only answer at batch granularity
        producer.produce(topic.name, value=str(i).encode(), timestamp=base + i * 1000)
    assert producer.flush(30) == 0

    consumer = Consumer(consumer_config(stack.settings, group_id))
    try:

        def lookup(ts: int) -> int:
            found = consumer.offsets_for_times([TopicPartition(topic.name, 0, ts)], timeout=10)
            return int(found[0].offset)

        assert [lookup(base + 3500), lookup(base), lookup(base + 9000)] == [4, 0, 9]
        assert lookup(base + 10**9) == -1  # OFFSET_END: nothing at or after that time
    finally:
        consumer.close()


def test_a_replay_reads_to_the_end_past_a_transaction_marker(
    stack: Stack, topic_factory: Callable[..., TopicSpec]
) -> None:
    """A transactional producer's commit marker is the partition's last offset and is never
    delivered: the strict replay must still see the end (before, it timed out), and must not
    return what was written after it began."""
    import uuid

    from services.kafka.replay import read_since

    topic = topic_factory(partitions=1)
    producer = Producer(
        producer_config(stack.settings, **{"transactional.id": f"t-{uuid.uuid4().hex[:8]}"})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic.name, value=str(i).encode())
    producer.commit_transaction(30)
    # The replay is strict: had it not seen the end, it would raise BrokerUnavailable once the
    # read stalls for ``timeout`` seconds. That is the assertion, not the wall time it took.
    got = read_since(stack.settings, topic.name, 0, 100, timeout=30)
    assert [m.value() for m in got] == [str(i).encode() for i in range(5)]


def test_lag_is_read_from_the_broker(
    stack: Stack, topic_factory: Callable[..., TopicSpec], group_id: str
) -> None:
    """Hand-made: 10 messages, the group committed 4 of them: lag 6, as the broker says."""
    import json

    topic = topic_factory(partitions=1)
    producer = Producer(producer_config(stack.settings))
    for i in range(10):
        producer.produce(topic.name, value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = Consumer(consumer_config(stack.settings, group_id))
    consumer.commit(offsets=[TopicPartition(topic.name, 0, 4)], asynchronous=False)
    consumer.close()
    out = run_cli(stack.settings, "--json", "lag", "--group", group_id)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert rows == [
        {
            "group": group_id,
            "topic": topic.name,
            "partition": 0,
            "committed": 4,
            "log_end": 10,
            "lag": 6,
        }
    ]
    piped = run_cli(stack.settings, "lag", "--group", group_id)
    assert piped.stdout.splitlines() == [
        "group\ttopic\tpartition\tcommitted\tlog_end\tlag",
        f"{group_id}\t{topic.name}\t0\t4\t10\t6",
    ]
    topics = run_cli(stack.settings, "--json", "lag", "--group", group_id, "--by-topic")
    assert topics.returncode == 0, topics.stderr[-2000:]
    [row] = json.loads(topics.stdout)
    assert (row["topic"], row["partitions"], row["messages"], row["lag"]) == (topic.name, 1, 10, 6)
    assert row["per_second"] == 0.0  # nothing produced between the two readings
