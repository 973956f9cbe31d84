"""The dead letter for a refused message, built to fit its topic whatever the original was.

A dead letter that the broker refuses would stop the worker on that message for ever (it comes
back on every restart). So the record is cut to a byte budget by construction: the key, every
header name and value, the number and total size of the headers, the detail and the original
value each have a bound, and the value gets what the rest leaves. What was cut is named in the
detail with ``TRUNCATED_MARK`` (such a letter is never redriven). The budget is at least
``MIN_DEAD_LETTER_BYTES``. ``minimal=True`` drops the original altogether: the worker's last
resort when the topic's own limit is smaller still.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.codec.avro import AvroCodec
from services.core.records import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_KEY_BYTES,
    TRUNCATED_MARK,
    DeadLetterOut,
    Headers,
)
from services.dlq.plan import REDRIVE_HEADER

DLQ_KEEP_VALUE_BYTES = 256 * 1024  # most of an original value a dead letter keeps
MAX_HEADER_NAME_BYTES = 256
MAX_HEADERS_TOTAL_BYTES = 64 * 1024  # all kept header names and values together
MAX_DETAIL_BYTES = 2048
MAX_NAME_BYTES = 512  # source topic, worker id
# Avro framing of a DeadLetter beyond its strings and bytes: the wire header, fixed fields, a
# length varint per string/bytes (at most 5 bytes each, 3 per header, plus unions and array
# blocks), and the Kafka record around it (the key again, two short headers). Generous.
FRAMING_BYTES = 1024
PER_HEADER_FRAMING = 16
MIN_DEAD_LETTER_BYTES = 16 * 1024


def _cut_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (never mid-character).

    >>> _cut_text("héllo", 2), _cut_text("abc", 10)
    ('h', 'abc')
    """
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def dead_letter_key(letter: DeadLetterOut) -> bytes | None:
    """The Kafka key of a dead letter: the original's, cut to the envelope's key limit."""
    key = letter.source.key
    return key if key is None or len(key) <= MAX_KEY_BYTES else key[:MAX_KEY_BYTES]


def dead_letter_record(
    letter: DeadLetterOut,
    worker_id: str,
    now_ms: int,
    max_bytes: int = 1_000_000,
    *,
    minimal: bool = False,
) -> dict[str, Any]:
    """The DeadLetter record for a refused message (original bytes kept, never printed), whose
    encoding plus its Kafka key and headers is at most ``max_bytes``."""
    src = letter.source
    cut: list[str] = []
    key = dead_letter_key(letter)
    if key is not None and src.key is not None and len(key) < len(src.key):
        cut.append(f"key {len(src.key)} bytes")
    reserved = FRAMING_BYTES + 2 * MAX_KEY_BYTES + 2 * MAX_DETAIL_BYTES + 2 * MAX_NAME_BYTES
    header_room = min(MAX_HEADERS_TOTAL_BYTES, max(0, max_bytes - reserved) // 2)
    headers, header_bytes = _kept_headers(src.headers, header_room, cut)
    value = src.value
    detail = _cut_text(letter.rejected.detail, MAX_DETAIL_BYTES)
    topic = _cut_text(src.topic, MAX_NAME_BYTES)
    worker = _cut_text(worker_id, MAX_NAME_BYTES)
    if minimal:
        key, value, headers = None, None, []
        cut = [f"original dropped to fit {max_bytes} bytes"]
    else:
        room = max(0, min(DLQ_KEEP_VALUE_BYTES, max_bytes - reserved - header_bytes))
        if value is not None and len(value) > room:
            cut.append(f"value {len(value)} bytes")
            value = value[:room]
    if cut:
        detail += f" {TRUNCATED_MARK}: {', '.join(cut)}; not redrivable]"
    return {
        "source_topic": topic,
        "source_partition": src.partition,
        "source_offset": src.offset,
        "original_key": key,
        "original_value": value,
        "original_headers": [{"key": k, "value": v} for k, v in headers],
        "stage": letter.rejected.stage.value,
        "reason": letter.rejected.reason.value,
        "detail": detail,
        "worker_id": worker,
        "failed_at": now_ms,
        "redrive_count": _redrive_count(src.headers),
    }


def _kept_headers(
    headers: Headers, room: int, cut: list[str]
) -> tuple[list[tuple[str, bytes | None]], int]:
    """At most ``MAX_HEADERS`` headers, names and values cut, ``room`` bytes in all; returns
    them with the bytes they take (framing included)."""
    kept: list[tuple[str, bytes | None]] = []
    total = 0
    trimmed = len(headers) > MAX_HEADERS
    for name, value in headers[:MAX_HEADERS]:
        short_name = _cut_text(name, MAX_HEADER_NAME_BYTES)
        short_value = value[:MAX_HEADER_BYTES] if value is not None else None
        size = len(short_name.encode("utf-8", "surrogatepass")) + len(short_value or b"")
        if total + size + PER_HEADER_FRAMING > room:
            trimmed = True
            break
        trimmed |= short_name != name or short_value != value
        kept.append((short_name, short_value))
        total += size + PER_HEADER_FRAMING
    if trimmed:
        cut.append(f"{len(headers)} headers")
    return kept, total


def dead_letter_headers(letter: DeadLetterOut) -> list[tuple[str, str | bytes | None]]:
    return [
        ("error.stage", letter.rejected.stage.value.encode()),
        ("error.reason", letter.rejected.reason.value.encode()),
    ]


def _redrive_count(headers: Headers) -> int:
    for k, v in headers:
        if k == REDRIVE_HEADER and v is not None:
            try:
                return int(v.decode())
            except (UnicodeDecodeError, ValueError):
                return 0
    return 0


def encode_cut(
    codec: AvroCodec, letter: DeadLetterOut, worker_id: str, now_ms: int, max_bytes: int
) -> bytes:
    """One dead letter without its original (``minimal``), encoded: what is written in place
    of a letter its topic refused, or would refuse, for its size."""
    return codec.encode_one(dead_letter_record(letter, worker_id, now_ms, max_bytes, minimal=True))


def encode_dead_letters(
    codec: AvroCodec,
    letters: Sequence[DeadLetterOut],
    worker_id: str,
    now_ms: int,
    max_bytes: int,
) -> list[bytes]:
    """The dead letters of a batch, encoded (the worker and replay write them alike)."""
    return codec.encode_many([dead_letter_record(d, worker_id, now_ms, max_bytes) for d in letters])
