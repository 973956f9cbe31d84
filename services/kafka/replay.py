"""Read a topic from a point in time to its current end (training windows, investigations)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.tail import read_to_ends


def read_since(
    settings: Settings, topic: str, since_ms: int, max_messages: int, timeout: float = 60.0
) -> list[Message]:
    """Every message of ``topic`` with a timestamp from ``since_ms`` up to the end as it was
    when called; the newest ``max_messages`` per partition at most.

    Raises:
        BrokerUnavailable: metadata or offsets cannot be read.
    """
    consumer = Consumer(consumer_config(settings, f"streamscore-replay-{uuid.uuid4().hex[:8]}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise BrokerUnavailable(f"topic {topic} not found", topic=topic)
        wanted = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
        starts = consumer.offsets_for_times(wanted, timeout=10)
        assignment, ends = [], {}
        for tp in starts:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
            start = tp.offset if tp.offset >= 0 else high  # -1: nothing that recent
            start = max(start, high - max_messages)
            if start < high:
                assignment.append(TopicPartition(topic, tp.partition, start))
                ends[tp.partition] = high
        return read_to_ends(consumer, assignment, ends, timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot replay {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()
