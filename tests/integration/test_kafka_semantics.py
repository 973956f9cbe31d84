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
