"""Offsets to commit after a batch: per partition, one past the last message handled."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Message, TopicPartition


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """The commit positions covering ``messages`` (empty when there are none)."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        tp = (m.topic() or "", m.partition() or 0)
        last[tp] = max(last.get(tp, -1), m.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
