"""`tail` on a dead-letter topic: the original bytes as JSON a person (and a script) can read,
never Python's ``b'...'`` reprs; the bytes come back exactly from what is printed."""

from __future__ import annotations

import base64
import json

from services.codec.factory import codec_for
from services.core.settings import Settings
from streams.commands.tail import readable
from streams.topics import by_record

AVRO_ORIGINAL = b"\x00\x00\x00\x00\x01\x0cu-0042\xf6\x01"  # framed Avro: binary
LETTER = {
    "source_topic": "feed.interactions.v1",
    "source_partition": 1,
    "source_offset": 7,
    "original_key": b"u-0042",
    "original_value": AVRO_ORIGINAL,
    "original_headers": [
        {"key": "producer-id", "value": b"web"},
        {"key": "trace", "value": None},
        {"key": "blob", "value": b"\xff\xfe"},
        {"key": "note", "value": "zürich\n".encode()},
    ],
    "stage": "validate",
    "reason": "out_of_range",
    "detail": "position=-5",
    "worker_id": "w-1",
    "failed_at": 1_763_798_400_000,
    "redrive_count": 0,
}


def test_a_dead_letter_prints_its_original_bytes_readably() -> None:
    s = Settings()
    codec = codec_for(s, by_record(s.topics, "DeadLetter"))
    decoded = codec.decode_one(codec.encode_one(LETTER))  # what tail gets from the topic
    printed = json.dumps(readable(decoded))  # no default=str: bytes left would raise TypeError
    shown = json.loads(printed)
    assert (shown["original_key"], shown["original_key_encoding"]) == ("u-0042", "utf-8")
    assert shown["original_value_encoding"] == "base64"
    assert base64.b64decode(shown["original_value"]) == AVRO_ORIGINAL
    assert shown["original_headers"] == [
        {"key": "producer-id", "value": "web", "value_encoding": "utf-8"},
        {"key": "trace", "value": None},
        {"key": "blob", "value": "//4=", "value_encoding": "base64"},
        {"key": "note", "value": "zürich\n", "value_encoding": "utf-8"},
    ]
    assert {k: shown[k] for k in ("stage", "reason", "source_offset")} == {
        "stage": "validate",
        "reason": "out_of_range",
        "source_offset": 7,
    }


def test_json_text_originals_stay_text() -> None:
    letter = LETTER | {"original_value": b'{"json": "not avro"}'}
    shown = readable(letter)
    assert (shown["original_value"], shown["original_value_encoding"]) == (
        '{"json": "not avro"}',
        "utf-8",
    )
