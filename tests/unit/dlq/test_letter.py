"""A dead letter always fits the broker, whatever the original was (hole: a 2 MB header name,
compressed by its producer, made a dead letter the broker refused, on every restart)."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings, target
from hypothesis import strategies as st

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.outcomes import Reason, Rejected, Stage
from services.core.records import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_KEY_BYTES,
    TRUNCATED_MARK,
    DeadLetterOut,
    Inbound,
)
from services.dlq.letter import (
    DLQ_KEEP_VALUE_BYTES,
    MAX_DETAIL_BYTES,
    MAX_HEADER_NAME_BYTES,
    MIN_DEAD_LETTER_BYTES,
    PER_HEADER_FRAMING,
    dead_letter_headers,
    dead_letter_key,
    dead_letter_record,
)
from services.dlq.plan import plan_redrive

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
IDS = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
DLQ = AvroCodec(SCHEMAS["DeadLetter"], IDS, "feed.interactions.v1.dlq-value")


def kafka_size(
    letter: DeadLetterOut,
    limit: int,
    *,
    minimal: bool = False,
    worker: str = "w",
    now_ms: int = 0,
) -> int:
    """What the produced dead letter weighs: value, key and headers (the record's framing is a
    few dozen bytes more, inside the letter's own allowance)."""
    record = dead_letter_record(letter, worker, now_ms, limit, minimal=minimal)
    value = DLQ.encode_one(record)
    key = None if minimal else dead_letter_key(letter)
    headers = sum(len(k) + len(v or b"") for k, v in dead_letter_headers(letter))
    return len(value) + len(key or b"") + headers


def raw_size(letter: DeadLetterOut) -> int:
    """About what the original weighs before any cut (header names counted in characters)."""
    src = letter.source
    headers = sum(len(k) + len(v or b"") for k, v in src.headers)
    return len(src.key or b"") + len(src.value or b"") + headers


def within_bounds(letter: DeadLetterOut, limit: int) -> bool:
    """Whether the original is within every per-field bound, its headers take at most a
    quarter of the smallest budget and its value at most a quarter of this one: such a letter
    loses nothing."""
    src = letter.source
    if len(src.headers) > MAX_HEADERS or any(
        len(k) > MAX_HEADER_NAME_BYTES for k, _ in src.headers
    ):
        return False  # (checked on characters first: some names are megabytes)
    names = [len(k.encode("utf-8", "surrogatepass")) for k, _ in src.headers]
    values = [len(v or b"") for _, v in src.headers]
    headers = sum(names) + sum(values) + PER_HEADER_FRAMING * len(names)
    return (
        len(src.key or b"") <= MAX_KEY_BYTES
        and all(n <= MAX_HEADER_NAME_BYTES for n in names)
        and all(n <= MAX_HEADER_BYTES for n in values)
        and headers <= MIN_DEAD_LETTER_BYTES // 4
        and len(src.value or b"") <= min(limit // 4, DLQ_KEEP_VALUE_BYTES)
        and len(letter.rejected.detail.encode("utf-8", "surrogatepass")) <= MAX_DETAIL_BYTES
    )


SIZES = [0, 1, 255, 256, 257, 1024, 1025, 8192, 8193, 65_536, 70_000, 262_145, 2_100_000]
sizes = st.sampled_from(SIZES)
# One bytes object per size, shared by every header that uses it: 300 headers of 2 MB each
# then cost nothing to build, so the property can afford many examples of them.
_FILL = {n: b"v" * n for n in SIZES}
CHARS = ["h", "é", "\u20ac", "\U0001f600"]  # 1 to 4 UTF-8 bytes a character
names = st.one_of(
    st.text(max_size=20),
    st.builds(lambda n, c: c * n, sizes, st.sampled_from(CHARS)),
)
BIG = 2_100_000


@st.composite
def originals(draw: st.DrawFn) -> DeadLetterOut:
    n_headers = draw(st.sampled_from([0, 1, 3, 63, 64, 65, 300]))
    header_names = draw(st.lists(names, min_size=1, max_size=4))
    header_sizes = draw(st.lists(sizes, min_size=1, max_size=4))
    headers = tuple(
        (header_names[i % len(header_names)], _FILL[header_sizes[i % len(header_sizes)]])
        for i in range(n_headers)
    )
    key = draw(st.one_of(st.none(), st.builds(lambda n: b"k" * n, sizes)))
    value = draw(st.one_of(st.none(), st.builds(lambda n: b"\x00" * n, sizes)))
    topic = draw(st.sampled_from(["t", "x" * 249, "\U0001f600" * 600]))
    detail = draw(
        st.one_of(
            st.text(max_size=50),
            st.builds(lambda n, c: c * n, sizes, st.sampled_from(CHARS)),
        )
    )
    partition = draw(st.sampled_from([0, 2**31 - 1]))
    offset = draw(st.sampled_from([0, 7, 2**63 - 1]))
    message = Inbound(topic, partition, offset, key, value, headers)
    return DeadLetterOut(message, Rejected(Stage.WIRE, Reason.HEADER_TOO_LARGE, detail))


def _biggest(name_char: str) -> DeadLetterOut:
    """Everything at its largest: 300 headers with 2 MB names and values, 2 MB key and value,
    a 2 MB detail, the longest coordinates."""
    headers = ((name_char * BIG, _FILL[BIG]),) * 300  # one name and value, shared
    message = Inbound("\U0001f600" * 600, 2**31 - 1, 2**63 - 1, b"k" * BIG, b"\x00" * BIG, headers)
    detail = "\U0001f600" * BIG
    return DeadLetterOut(message, Rejected(Stage.WIRE, Reason.HEADER_TOO_LARGE, detail))


# Headers that each just fit their own bounds (a 256-byte name, an 8 KB value), as many as
# are kept: the most header bytes a letter can keep before its header budget cuts them.
_FULL_HEADERS = DeadLetterOut(
    Inbound("t", 0, 7, b"k" * 1024, b"\x00" * BIG, (("n" * 256, _FILL[8192]),) * 64),
    Rejected(Stage.WIRE, Reason.HEADER_TOO_LARGE, "d" * 2048),
)
LIMITS = [MIN_DEAD_LETTER_BYTES, 20_000, 100_000, 300_000, 1_000_000]
WORKERS = ["w", "\U0001f600" * 600]


@settings(max_examples=300, deadline=None)
@given(
    letter=originals(),
    limit=st.one_of(st.sampled_from(LIMITS), st.integers(MIN_DEAD_LETTER_BYTES, 1_100_000)),
    worker=st.sampled_from(WORKERS),
    now_ms=st.sampled_from([0, 2**63 - 1]),
)
def test_a_dead_letter_always_fits_its_budget(
    letter: DeadLetterOut, limit: int, worker: str, now_ms: int
) -> None:
    # Steer the search toward originals far over the budget (the case the cut exists for).
    target(min(raw_size(letter) / limit, 1000.0), label="original / budget")
    size = kafka_size(letter, limit, worker=worker, now_ms=now_ms)
    assert size <= limit
    assert kafka_size(letter, limit, minimal=True, worker=worker, now_ms=now_ms) <= 4096
    # The other half: cutting everything would fit too. An original within every bound is
    # kept whole, and redrivable.
    whole = within_bounds(letter, limit)
    event(f"within bounds: {whole}")
    if whole:
        src = letter.source
        record = dead_letter_record(letter, worker, now_ms, limit)
        assert TRUNCATED_MARK not in record["detail"]
        assert (record["original_key"], record["original_value"]) == (src.key, src.value)
        assert [(h["key"], h["value"]) for h in record["original_headers"]] == list(src.headers)


@pytest.mark.parametrize(
    ("letter", "limit", "worker"),
    [
        (_biggest("\U0001f600"), MIN_DEAD_LETTER_BYTES, WORKERS[1]),
        (_biggest("h"), MIN_DEAD_LETTER_BYTES, WORKERS[1]),
        (_biggest("h"), 1_000_000, WORKERS[1]),
        (_FULL_HEADERS, MIN_DEAD_LETTER_BYTES, "w"),
        (_FULL_HEADERS, 300_000, "w"),
    ],
    ids=["largest-4-byte-names-min", "largest-min", "largest-1mb", "full-headers-min", "full-300k"],
)
def test_the_largest_originals_fit_their_budget(
    letter: DeadLetterOut, limit: int, worker: str
) -> None:
    """The corners the property may not reach, always run (plain cases: hypothesis would print
    gigabytes of arguments)."""
    assert kafka_size(letter, limit, worker=worker, now_ms=2**63 - 1) <= limit
    assert kafka_size(letter, limit, minimal=True, worker=worker, now_ms=2**63 - 1) <= 4096


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
