"""A dead letter always fits the broker, whatever the original was (hole: a 2 MB header name,
compressed by its producer, made a dead letter the broker refused, on every restart)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.outcomes import Reason, Rejected, Stage
from services.core.records import DeadLetterOut, Inbound
from services.dlq.letter import (
    MIN_DEAD_LETTER_BYTES,
    dead_letter_headers,
    dead_letter_key,
    dead_letter_record,
)
from services.dlq.plan import plan_redrive

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
IDS = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
DLQ = AvroCodec(SCHEMAS["DeadLetter"], IDS, "feed.interactions.v1.dlq-value")


def kafka_size(letter: DeadLetterOut, limit: int, *, minimal: bool = False) -> int:
    """What the produced dead letter weighs: value, key and headers (the record's framing is a
    few dozen bytes more, inside the letter's own allowance)."""
    value = DLQ.encode_one(dead_letter_record(letter, "w", 0, limit, minimal=minimal))
    key = None if minimal else dead_letter_key(letter)
    headers = sum(len(k) + len(v or b"") for k, v in dead_letter_headers(letter))
    return len(value) + len(key or b"") + headers


sizes = st.sampled_from([0, 1, 255, 256, 257, 1024, 1025, 8192, 70_000, 300_000, 2_100_000])
names = st.one_of(
    st.text(max_size=20),
    st.builds(lambda n, c: c * n, sizes, st.sampled_from(["h", "é", "\U0001f600"])),
)


@st.composite
def originals(draw: st.DrawFn) -> DeadLetterOut:
    n_headers = draw(st.sampled_from([0, 1, 3, 64, 65, 300]))
    header_names = draw(st.lists(names, min_size=1, max_size=3))
    header_sizes = draw(st.lists(sizes, min_size=1, max_size=3))
    headers = tuple(
        (header_names[i % len(header_names)], b"v" * header_sizes[i % len(header_sizes)])
        for i in range(n_headers)
    )
    key = draw(st.one_of(st.none(), st.builds(lambda n: b"k" * n, sizes)))
    value = draw(st.one_of(st.none(), st.builds(lambda n: b"\x00" * n, sizes)))
    topic = draw(st.sampled_from(["t", "x" * 249]))
    detail = draw(st.one_of(st.text(max_size=50), st.builds(lambda n: "d" * n, sizes)))
    message = Inbound(topic, 0, 7, key, value, headers)
    return DeadLetterOut(message, Rejected(Stage.WIRE, Reason.HEADER_TOO_LARGE, detail))


@settings(max_examples=60, deadline=None)
@given(
    letter=originals(), limit=st.sampled_from([MIN_DEAD_LETTER_BYTES, 20_000, 100_000, 1_000_000])
)
def test_a_dead_letter_always_fits_its_budget(letter: DeadLetterOut, limit: int) -> None:
    assert kafka_size(letter, limit) <= limit
    assert kafka_size(letter, limit, minimal=True) <= 4096  # the last resort is tiny


def test_a_two_megabyte_header_name_is_cut_and_the_letter_is_never_redriven() -> None:
    name = "n" * 2_000_000
    letter = DeadLetterOut(
        Inbound("t", 0, 1, b"k", b"v", ((name, b"x"),)),
        Rejected(Stage.WIRE, Reason.HEADER_TOO_LARGE, "header too large"),
    )
    record = dead_letter_record(letter, "w", 0)
    (kept,) = record["original_headers"]
    assert kept == {"key": "n" * 256, "value": b"x"}
    assert "original truncated" in record["detail"] and "1 headers" in record["detail"]
    assert plan_redrive([record], None, 3).refused_loop == 1


def test_an_untouched_original_is_kept_whole_and_redrivable() -> None:
    letter = DeadLetterOut(
        Inbound("t", 2, 9, b"key", b"\x00garbage", (("a", b"1"), ("b", None))),
        Rejected(Stage.DECODE, Reason.BAD_MAGIC_BYTE, "first byte 0x00"),
    )
    record = dead_letter_record(letter, "w", 5)
    assert (record["original_key"], record["original_value"]) == (b"key", b"\x00garbage")
    assert record["original_headers"] == [{"key": "a", "value": b"1"}, {"key": "b", "value": None}]
    assert record["detail"] == "first byte 0x00"
    assert len(plan_redrive([record], None, 3).to_send) == 1


def test_the_minimal_letter_keeps_coordinates_and_reason_only() -> None:
    letter = DeadLetterOut(
        Inbound("t", 2, 9, b"key", b"v" * 5000, (("a", b"1"),)),
        Rejected(Stage.DECODE, Reason.BAD_MAGIC_BYTE, "first byte 0x76"),
    )
    record = dead_letter_record(letter, "w", 5, minimal=True)
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        "t",
        2,
        9,
    )
    assert record["original_value"] is None and record["original_headers"] == []
    assert "original dropped" in record["detail"] and record["reason"] == "bad_magic_byte"
