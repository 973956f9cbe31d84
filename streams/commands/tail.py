"""`streamscore tail TOPIC`: look at a topic, decoded with its schema, one JSON object a line."""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from typing import Any

import click
from confluent_kafka import Consumer, Message, TopicPartition

from services.codec.factory import codec_for
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.ranges import watermarks
from services.kafka.tail import read_window
from services.kafka.topics import DLQ_SUFFIX, TopicSpec
from streams.commands.common import app, parse_since
from streams.topics import SANDBOX_PREFIX, by_record, topic_table

FILTER_SCAN = 10_000  # messages per partition read when --key or --where filters them


@click.command()
@click.argument("topic")
@click.option(
    "-n",
    "n",
    default=10,
    type=click.IntRange(min=1),
    show_default=True,
    help="Messages to print (the newest, by default).",
)
@click.option("--from-beginning", is_flag=True, help="The first messages instead of the newest.")
@click.option("--from-time", default=None, help="From this event time: 30m, 2h, epoch ms, ISO.")
@click.option("--offset", "at", default=None, help="From PARTITION:OFFSET.")
@click.option("--raw", is_flag=True, help="The value's bytes (hex), not decoded.")
@click.option("--key", default=None, help="Only messages with this key.")
@click.option("--where", "where", multiple=True, help="Only values with FIELD=VALUE (repeatable).")
@click.option("--follow", "-f", is_flag=True, help="Then print new messages until Ctrl-C.")
@click.pass_context
def tail(
    ctx: click.Context,
    topic: str,
    n: int,
    from_beginning: bool,
    from_time: str | None,
    at: str | None,
    raw: bool,
    key: str | None,
    where: tuple[str, ...],
    follow: bool,
) -> None:
    """Print messages of TOPIC as JSON lines (topic, partition, offset, timestamp, key, value),
    with or without --json.
    Values are decoded with the topic's schema from the topic table; --raw for other topics."""
    s = app(ctx).settings
    if n < 1:
        raise click.BadParameter("must be at least 1", param_hint="-n")
    if sum(bool(x) for x in (from_beginning, from_time, at)) > 1:
        raise click.UsageError("give one of --from-beginning, --from-time, --offset")
    start_at = _partition_offset(at) if at else None
    filters = [_field_value(w) for w in where]
    codec = None
    if not raw:
        codec = codec_for(s, _spec_of(s, topic))
    since = parse_since(from_time, int(time.time() * 1000), "--from-time") if from_time else None
    # With a filter, look further (up to FILTER_SCAN a partition) for N that match.
    scan = n if key is None and not filters else max(n, FILTER_SCAN)
    # New messages start past what the window reads, or at the end as it was before the read.
    before = _ends(s, topic) if follow else {}
    messages = read_window(
        s, topic, scan, from_beginning=from_beginning, since_ms=since, start_at=start_at
    )
    newest_first = not (from_beginning or since is not None or start_at is not None)
    messages.sort(key=lambda m: (m.timestamp()[1], m.partition() or 0, m.offset() or 0))
    out = []
    for m in reversed(messages) if newest_first else messages:
        row = _row(m, codec)
        if _wanted(row, key, filters):
            out.append(row)
            if len(out) >= n:
                break
    for row in reversed(out) if newest_first else out:
        sys.stdout.write(json.dumps(row, default=str) + "\n")
    if follow:
        for m in messages:
            p = m.partition() or 0
            before[p] = max(before.get(p, 0), (m.offset() or 0) + 1)
        _follow(s, topic, before, codec, key, filters)


def _wanted(row: dict[str, Any], key: str | None, filters: list[tuple[str, str]]) -> bool:
    if key is not None and row["key"] != key:
        return False
    return all(str((row.get("value") or {}).get(f)) == v for f, v in filters)


def _ends(s: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(s, f"streamscore-tail-{uuid.uuid4().hex[:8]}"))
    try:
        return {p: high for p, (_low, high) in watermarks(consumer, topic).items()}
    finally:
        consumer.close()


def _follow(
    s: Settings,
    topic: str,
    starts: dict[int, int],
    codec: Any,
    key: str | None,
    filters: list[tuple[str, str]],
) -> None:
    """Print new messages from ``starts`` (partition: offset) until Ctrl-C."""
    sys.stdout.flush()
    consumer = Consumer(consumer_config(s, f"streamscore-tail-{uuid.uuid4().hex[:8]}"))
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
        while True:
            for m in consumer.consume(500, 0.5):
                if m.error() is None and _wanted(row := _row(m, codec), key, filters):
                    sys.stdout.write(json.dumps(row, default=str) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _spec_of(s: Settings, topic: str) -> TopicSpec:
    """The topic's entry in the topic table; a sandbox's topics carry predictions and dead
    letters; anything else is refused (use --raw)."""
    spec = next((t for t in topic_table(s.topics) if t.name == topic), None)
    if spec is not None:
        return spec
    if topic.startswith(SANDBOX_PREFIX):
        record = "DeadLetter" if topic.endswith(DLQ_SUFFIX) else "Prediction"
        return by_record(s.topics, record)
    raise ConfigError(f"{topic} is not in the topic table (streamscore topics); use --raw")


def _row(m: Message, codec: Any) -> dict[str, Any]:
    k = m.key()
    row: dict[str, Any] = {
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp()[1],
        "key": k.decode(errors="replace") if k is not None else None,
    }
    value = m.value()
    if codec is None:
        return row | {"value_hex": value.hex() if value is not None else None}
    decoded = codec.decode_one(value)
    if isinstance(decoded, dict):
        return row | {"value": readable(decoded)}
    return row | {"value": None, "undecodable": f"{decoded.reason.value}: {decoded.detail}"}


def readable(value: Any) -> Any:
    """``value`` with every bytes field made JSON: its text when it is UTF-8 without control
    characters, else base64; a ``<field>_encoding`` beside it says which. A dead letter's
    original bytes are shown so (an Avro original is binary, so base64).

    >>> readable({"original_key": b"u-1", "original_value": b"\\x00\\x00\\x00\\x00\\x01\\xff"})
    {'original_key': 'u-1', 'original_key_encoding': 'utf-8', \
'original_value': 'AAAAAAH/', 'original_value_encoding': 'base64'}
    >>> readable({"original_headers": [{"key": "error.stage", "value": b"decode"}]})
    {'original_headers': [{'key': 'error.stage', 'value': 'decode', 'value_encoding': 'utf-8'}]}
    """
    if isinstance(value, list):
        return [readable(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, v in value.items():
        if isinstance(v, bytes):
            out[name], out[f"{name}_encoding"] = _text_or_base64(v)
        else:
            out[name] = readable(v)
    return out


def _text_or_base64(data: bytes) -> tuple[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\n\r" for c in text):
        return text, "utf-8"
    return base64.b64encode(data).decode("ascii"), "base64"


def _partition_offset(text: str) -> tuple[int, int]:
    try:
        p, o = text.split(":")
        return int(p), int(o)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give PARTITION:OFFSET", param_hint="--offset") from exc


def _field_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise click.BadParameter(f"{text!r}: give FIELD=VALUE", param_hint="--where")
    f, v = text.split("=", 1)
    return f, v
