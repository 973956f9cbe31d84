"""Read the newest messages of a topic without joining a group (ops commands, reports)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.ranges import iter_ranges, partitions_of
from services.replay.plan import Range


def read_tail(settings: Settings, topic: str, last: int, timeout: float = 15.0) -> list[Message]:
    """Up to ``last`` newest messages of each partition of ``topic``, oldest first per partition.

    Raises:
        BrokerUnavailable: the topic's metadata or offsets cannot be read.
    """
    return read_window(settings, topic, last, timeout=timeout)


def read_to_ends(
    consumer: Consumer,
    assignment: list[TopicPartition],
    ends: dict[int, int],
    timeout: float,
    strict: bool = False,
) -> list[Message]:
    """Read ``assignment`` until each partition reaches its end offset in ``ends``
    (``services.kafka.ranges.iter_ranges``); the caller closes the consumer.

    Raises:
        BrokerUnavailable: ``strict`` and the read stalled for ``timeout`` seconds before every
            partition reached its end. Without ``strict``, what was read is returned.
    """
    if not assignment:
        return []
    topic = assignment[0].topic
    ranges = [Range(tp.partition, tp.offset, ends[tp.partition]) for tp in assignment]
    out: list[Message] = []
    try:
        for batch in iter_ranges(consumer, topic, ranges, stall_timeout=timeout):
            out += batch
    except BrokerUnavailable:
        if strict:
            raise
    return out


def read_window(
    settings: Settings,
    topic: str,
    n: int,
    *,
    from_beginning: bool = False,
    since_ms: int | None = None,
    start_at: tuple[int, int] | None = None,
    timeout: float = 15.0,
) -> list[Message]:
    """Up to ``n`` messages per partition: the newest (default), the first (``from_beginning``),
    the first from a time (``since_ms``), or from one partition's offset (``start_at``:
    partition, offset). Oldest first per partition.

    Raises:
        NotFound: the topic does not exist.
        BrokerUnavailable: the broker did not answer, or refused (the text names it).
    """
    consumer = Consumer(consumer_config(settings, f"streamscore-tail-{uuid.uuid4().hex[:8]}"))
    try:
        # Missing or refused (a refusal's line names the grant): said before anything is read.
        every = partitions_of(consumer, topic)
        parts = every if start_at is None else [start_at[0]]
        starts: dict[int, int] = {}
        if since_ms is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in parts], timeout=10
            )
            starts = {tp.partition: tp.offset for tp in found}
        assignment, ends = [], {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if start_at is not None:
                start = max(low, start_at[1])
            elif since_ms is not None:
                start = starts.get(p, -1) if starts.get(p, -1) >= 0 else high
            elif from_beginning:
                start = low
            else:  # the newest
                start = max(low, high - n)
            end = min(high, start + n)
            if start < end:
                assignment.append(TopicPartition(topic, p, start))
                ends[p] = end
        return read_to_ends(consumer, assignment, ends, timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read {topic}: {exc}", topic=topic) from exc
    finally:
        consumer.close()
