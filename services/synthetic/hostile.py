"""Deliberately bad inputs, each with the stage and reason a worker must refuse it with."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from services.codec.avro import AvroCodec
from services.codec.wire import frame


def hostile_values(codec: AvroCodec, template: dict[str, Any]) -> list[tuple[bytes, str, str]]:
    """(value bytes, expected stage, expected reason) for a spread of malformed feed events."""

    def variant(**changes: Any) -> bytes:
        return codec.encode_one(template | changes)

    feed: list[tuple[Callable[[], bytes], str, str]] = [
        (lambda: variant(user_id="u" * 5000), "validate", "too_long"),
        (lambda: variant(country="Germany"), "validate", "bad_format"),
        (lambda: variant(position=-3), "validate", "out_of_range"),
        (lambda: variant(item_age_hours=math.nan), "validate", "not_finite"),
        (lambda: variant(network_rtt_ms=math.inf), "validate", "not_finite"),
    ]
    return any_domain_hostile_values(codec, template) + [(m(), st, r) for m, st, r in feed]


def any_domain_hostile_values(
    codec: AvroCodec, template: dict[str, Any]
) -> list[tuple[bytes, str, str]]:
    """Malformed messages any domain's worker refuses the same way: broken framing and Avro,
    an empty event id, an event time a month ahead."""
    good = codec.encode_one(template)

    def variant(**changes: Any) -> bytes:
        return codec.encode_one(template | changes)

    cases: list[tuple[Callable[[], bytes], str, str]] = [
        (lambda: b"", "decode", "empty_payload"),
        (lambda: b'{"event_id": "json-not-avro"}', "decode", "bad_magic_byte"),
        (lambda: b"\x00\x00\x01", "decode", "truncated_header"),
        (lambda: frame(987654, good[5:]), "decode", "unknown_schema_id"),
        (lambda: good[: len(good) // 2], "decode", "avro_decode_error"),
        (lambda: good + b"\x00\x01", "decode", "trailing_bytes"),
        (lambda: variant(event_id=""), "validate", "missing_value"),
        (
            lambda: variant(event_time=template["event_time"] + 86_400_000 * 30),
            "validate",
            "time_out_of_window",
        ),
    ]
    return [(make(), stage, reason) for make, stage, reason in cases]
