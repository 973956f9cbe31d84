"""confluent-kafka messages as the pipeline's client-free ``Inbound`` records."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message

from services.core.records import Headers, Inbound


def to_inbound(messages: Sequence[Message]) -> list[Inbound]:
    return [
        Inbound(
            m.topic() or "",
            m.partition() or 0,
            m.offset() or 0,
            m.key(),
            m.value(),
            headers_of(m),
        )
        for m in messages
    ]


def headers_of(m: Message) -> Headers:
    raw = m.headers()
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), v.encode() if isinstance(v, str) else v) for k, v in items)
