"""The records every layer passes around: a consumed message (``Inbound``), a refused one
(``DeadLetterOut``), their headers, and the envelope limits checked before any decoding.

They are independent of the Kafka client, so the codec, the dead-letter builder, the scoring
core and the three shells (worker, HTTP/file scorer, replay) share them without reaching into
each other.

>>> m = Inbound("t", 0, 7, b"k", b"v", (("h", b"1"),))
>>> m.offset, dict(m.headers)
(7, {'h': b'1'})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.core.outcomes import Rejected

Headers = tuple[tuple[str, bytes | None], ...]

# Envelope limits (before any decoding). Keys and headers are small in every sane producer; a
# huge one is abuse or a bug, and would also make its dead letter too big for the broker.
MAX_KEY_BYTES = 1024
MAX_HEADERS = 64
MAX_HEADER_BYTES = 8192
# The header naming who produced a message (the rate limits' producer id).
PRODUCER_HEADER = "producer-id"
# A dead letter that keeps a cut original says so (services.dlq.letter builds it).
TRUNCATED_MARK = "[original truncated"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message to score, independent of the Kafka client: consumed from ``topic``, or
    handed in by a caller (the HTTP/file scorer numbers its requests as offsets of no topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class DeadLetterOut:
    """A refused message: the original, and why."""

    source: Inbound
    rejected: Rejected


def first_offsets(messages: Iterable[Inbound]) -> dict[tuple[str, int], int]:
    """The first offset of each partition among ``messages`` (where a partition is put back
    to, or where its deferred suffix starts).

    >>> first_offsets([Inbound("t", 0, 5, None, b""), Inbound("t", 0, 3, None, b""),
    ...                Inbound("t", 1, 9, None, b"")])
    {('t', 0): 3, ('t', 1): 9}
    """
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        first[key] = min(first.get(key, m.offset), m.offset)
    return first


def handled_ends(
    messages: Iterable[Inbound], deferred: Iterable[Inbound] = ()
) -> dict[tuple[str, int], int]:
    """Per partition, one past the last message handled: the offset to commit after a batch.
    ``deferred`` messages (a suffix per partition, read again later) are not handled; a
    partition whose every message was deferred is left out.

    >>> batch = [Inbound("t", 0, 3, None, b""), Inbound("t", 0, 4, None, b""),
    ...          Inbound("t", 0, 5, None, b""), Inbound("t", 1, 9, None, b"")]
    >>> handled_ends(batch, deferred=[batch[2], batch[3]])
    {('t', 0): 5}
    """
    cut = first_offsets(deferred)
    ends: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        if key in cut and m.offset >= cut[key]:
            continue
        ends[key] = max(ends.get(key, 0), m.offset + 1)
    return ends
