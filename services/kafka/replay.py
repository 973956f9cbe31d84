"""Read a topic from a point in time to its current end (training windows, investigations)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.core.errors import BrokerUnavailable, NotFound
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.ranges import partitions_of
from services.kafka.tail import read_to_ends


def read_since(
    settings: Settings,
    topic: str,
    since_ms: int,
    max_messages: int,
    timeout: float = 60.0,
    until_group: str | None = None,
    group: str | None = None,
) -> list[Message]:
    """Every message of ``topic`` with a timestamp from ``since_ms`` up to the end as it was
    when called; the newest ``max_messages`` per partition at most. All of it, or an error.

    ``until_group``: stop instead at that consumer group's committed offsets (what the group
    has not handled yet is left to it; a partition without a commit is read to its end).
    ``group``: the group the consumer names (it assigns and never commits; on a secured cluster
    the principal must still be granted Read on it); a throwaway replay group by default.

    Raises:
        BrokerUnavailable: metadata or offsets cannot be read, or the end was not reached in
            ``timeout`` seconds.
    """
    consumer = Consumer(consumer_config(settings, until_group or group or _throwaway()))
    try:
        try:
            partitions = partitions_of(consumer, topic)
        except NotFound as exc:
            raise BrokerUnavailable(f"topic {topic} not found", topic=topic) from exc
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        committed = {}
        if until_group is not None:
            tps = [TopicPartition(topic, p) for p in partitions]
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        assignment, ends = [], {}
        for tp in starts:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
            end = committed.get(tp.partition, -1)
            end = high if end < 0 else min(end, high)
            start = tp.offset if tp.offset >= 0 else end  # -1: nothing that recent
            start = max(start, end - max_messages)
            if start < end:
                assignment.append(TopicPartition(topic, tp.partition, start))
                ends[tp.partition] = end
        return read_to_ends(consumer, assignment, ends, timeout, strict=True)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot replay {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def _throwaway() -> str:
    return f"streamscore-replay-{uuid.uuid4().hex[:8]}"
