"""Reading offset ranges of a topic to their ends: the one read side of replays, dead-letter
redrives, tails and training windows.

Ends are read strictly: a range that stops making progress raises instead of returning a part
(a partial read would silently drop the newest messages). Transaction markers and aborted
batches end a partition without a message, so the consumer's position is checked too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from services.core.errors import BrokerUnavailable, NotFound
from services.kafka.denied import refusal
from services.replay.plan import Range


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The partitions of ``topic``, from the cluster's metadata.

    A topic this client may not describe comes back with TOPIC_AUTHORIZATION_FAILED (a secured
    cluster answers so for a topic that does not exist too, to hide which do): that is a
    refusal, whose line must name the missing grant, never "does not exist".

    Raises:
        NotFound: the topic does not exist.
        BrokerUnavailable: the broker did not answer, or refused (its text names the refusal,
            ``services.kafka.denied``).
        KafkaException: from the client, for the caller to wrap.
    """
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is not None and meta.error is not None and refusal(str(meta.error)):
        raise BrokerUnavailable(f"cannot read {topic}: {meta.error}", topic=topic)
    if meta is None or meta.error is not None:
        raise NotFound(f"topic {topic} does not exist")
    return sorted(meta.partitions)


def watermarks(consumer: Consumer, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Low and high watermark of every partition of ``topic``.

    Raises:
        NotFound: the topic does not exist.
        BrokerUnavailable: the broker did not answer, or refused (``partitions_of``).
    """
    try:
        parts = partitions_of(consumer, topic, timeout)
        deadline = time.monotonic() + timeout
        return {p: _watermark(consumer, TopicPartition(topic, p), deadline) for p in parts}
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read offsets of {topic}: {exc}", topic=topic) from exc


# A partition's leader moving, or not elected yet: the next ask may find it.
_MOVING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}


def _watermark(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """One partition's watermarks, asked again while the error is retriable (a leader moving
    or just elected: NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE) until ``deadline``."""
    pause = 0.05
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(0.1, deadline - time.monotonic())
            )
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            retriable = code in _MOVING or (isinstance(err, KafkaError) and err.retriable())
            if not retriable or time.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)  # backoff before asking the new leader
        pause = min(pause * 2, 1.0)


def offsets_at(
    consumer: Consumer, topic: str, partitions: Sequence[int], ms: int, timeout: float = 10.0
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after ``ms``; -1 where none is.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in partitions], timeout=timeout
        )
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot look up times in {topic}: {exc}", topic=topic) from exc
    return {tp.partition: tp.offset for tp in found}


def committed(
    consumer: Consumer, topic: str, partitions: Sequence[int], timeout: float = 10.0
) -> dict[int, int]:
    """The consumer's group's committed offsets (negative where it has none).

    Raises:
        BrokerUnavailable: the group coordinator did not answer.
    """
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read committed offsets: {exc}", topic=topic) from exc
    return {tp.partition: tp.offset for tp in tps}


def iter_ranges(
    consumer: Consumer,
    topic: str,
    ranges: Sequence[Range],
    stall_timeout: float = 30.0,
    max_batch: int = 1000,
) -> Iterator[list[Message]]:
    """Batches of the messages in ``ranges``, in offset order per partition, until every range
    is read. The caller closes the consumer.

    Raises:
        BrokerUnavailable: no progress for ``stall_timeout`` seconds (names what was not read),
            or the client failed.
    """
    todo = {r.partition: r.end for r in ranges if r.count}
    if not todo:
        return
    try:
        consumer.assign([TopicPartition(topic, r.partition, r.start) for r in ranges if r.count])
        deadline = time.monotonic() + stall_timeout
        while todo:
            if time.monotonic() > deadline:
                behind = ", ".join(f"partition {p} to offset {e}" for p, e in sorted(todo.items()))
                raise BrokerUnavailable(
                    f"read of {topic} stalled for {stall_timeout:.0f} s: not read {behind}",
                    topic=topic,
                )
            batch = []
            for m in consumer.consume(max_batch, 0.2):
                partition, offset = m.partition() or 0, m.offset() or 0
                if m.error() is not None and refusal(str(m.error())):
                    # A missing ACL: stop now, not after the stall timeout.
                    raise BrokerUnavailable(f"cannot read {topic}: {m.error()}", topic=topic)
                if m.error() is not None or offset >= todo.get(partition, -1):
                    continue  # past its end (read in the same fetch), or a partition done
                batch.append(m)
                if offset + 1 >= todo[partition]:
                    todo.pop(partition)
            if todo:  # a transaction marker or an aborted batch ends a partition unseen
                at = consumer.position([TopicPartition(topic, p) for p in todo])
                for tp in at:
                    if tp.offset >= todo.get(tp.partition, tp.offset + 1):
                        todo.pop(tp.partition)
            if batch:
                deadline = time.monotonic() + stall_timeout
                yield batch
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read {topic}: {exc}", topic=topic) from exc


def ranges_since(
    consumer: Consumer, topic: str, since_ms: int | None, until_ms: int | None = None
) -> list[Range]:
    """Per partition, from the first message at or after ``since_ms`` (from the beginning when
    None) up to the first at or after ``until_ms`` (the end as it is now when None).

    Raises:
        NotFound: the topic does not exist.
        BrokerUnavailable: the broker did not answer.
    """
    marks = watermarks(consumer, topic)
    parts = list(marks)
    starts = offsets_at(consumer, topic, parts, since_ms) if since_ms is not None else {}
    ends = offsets_at(consumer, topic, parts, until_ms) if until_ms is not None else {}
    out = []
    for p, (low, high) in marks.items():
        start, end = starts.get(p, low), ends.get(p, high)
        start = high if start < 0 else max(start, low)  # -1: nothing that recent
        end = high if end < 0 else min(end, high)
        out.append(Range(p, start, max(start, end)))
    return out
