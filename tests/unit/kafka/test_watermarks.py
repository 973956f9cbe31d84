"""Watermarks are asked again while the partition's leader is moving, and only then."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.core.errors import BrokerUnavailable
from services.kafka.ranges import watermarks


class _Meta:
    def __init__(self, partitions: int) -> None:
        self.partitions = {p: object() for p in range(partitions)}
        self.error = None


class _Listing:
    def __init__(self, topic: str, partitions: int) -> None:
        self.topics = {topic: _Meta(partitions)}


class FakeConsumer:
    """Answers watermarks (0, 10 + p) after ``errors`` (per partition, in order)."""

    def __init__(self, errors: dict[int, list[int]]) -> None:
        self.errors = {p: list(codes) for p, codes in errors.items()}
        self.asked: list[int] = []

    def list_topics(self, topic: str, timeout: float) -> _Listing:
        return _Listing(topic, 2)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> Any:
        self.asked.append(tp.partition)
        pending = self.errors.get(tp.partition, [])
        if pending:
            raise KafkaException(KafkaError(pending.pop(0)))
        return 0, 10 + tp.partition


def test_a_moving_leader_is_asked_again() -> None:
    c = FakeConsumer({0: [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE]})
    assert watermarks(c, "t", timeout=10) == {0: (0, 10), 1: (0, 11)}  # type: ignore[arg-type]
    assert c.asked.count(0) == 3


def test_an_error_that_is_not_retriable_is_broker_unavailable_at_once() -> None:
    c = FakeConsumer({1: [KafkaError.TOPIC_AUTHORIZATION_FAILED]})
    with pytest.raises(BrokerUnavailable, match="cannot read offsets of t"):
        watermarks(c, "t", timeout=10)  # type: ignore[arg-type]
    assert c.asked.count(1) == 1


def test_a_leader_that_never_comes_is_broker_unavailable_by_the_timeout() -> None:
    c = FakeConsumer({0: [KafkaError.NOT_LEADER_FOR_PARTITION] * 1000})
    with pytest.raises(BrokerUnavailable, match="NOT_LEADER"):
        watermarks(c, "t", timeout=0.3)  # type: ignore[arg-type]
    assert 1 < c.asked.count(0) < 1000
