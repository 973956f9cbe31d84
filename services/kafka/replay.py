"""Read a topic from a point in time to its current end (training windows, investigations)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.kafka.config import consumer_config


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
        if not assignment:
            return []
        consumer.assign(assignment)
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() is not None:
                    continue
                out.append(m)
                if (m.offset() or 0) + 1 >= ends.get(m.partition() or 0, 0):
                    ends.pop(m.partition() or 0, None)
        return out
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot replay {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()
