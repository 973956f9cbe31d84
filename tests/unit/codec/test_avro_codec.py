"""The batch codec: round trips, and hostile bytes always come back as a reasoned Rejected."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.codec.avro import AvroCodec
from services.codec.manifest import Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.codec.wire import frame
from services.core.errors import ConfigError
from services.core.outcomes import Reason, Rejected, Stage
from tests.factories import interaction

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
SUBJECT = "feed.interactions.v1-value"


def make_codec(max_bytes: int = 10_000) -> AvroCodec:
    manifest, _, _ = Manifest.empty().register(SUBJECT, SCHEMAS["Interaction"])
    return AvroCodec(
        SCHEMAS["Interaction"], ManifestSchemaIds(manifest), SUBJECT, max_message_bytes=max_bytes
    )


CODEC = make_codec()

interactions = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=40),
        "event_time": st.integers(0, 2**53),
        "user_id": st.text(max_size=20),
        "item_id": st.text(max_size=20),
        "surface": st.sampled_from(["UNKNOWN", "HOME_FEED", "EXPLORE", "PROFILE"]),
        "device": st.sampled_from(["UNKNOWN", "IOS", "ANDROID", "WEB"]),
        "country": st.text(max_size=3),
        "position": st.integers(-(2**31), 2**31 - 1),
        "session_depth": st.integers(0, 2**31 - 1),
        "item_age_hours": st.floats(allow_nan=False),
        "user_tenure_days": st.integers(0, 100_000),
        "network_rtt_ms": st.none() | st.floats(allow_nan=False),
        "is_following_author": st.booleans(),
        "is_video": st.booleans(),
        "is_sponsored": st.booleans(),
    }
)


@given(st.lists(interactions, max_size=20))
def test_encode_then_decode_is_identity(records: list[dict[str, Any]]) -> None:
    assert CODEC.decode_many(CODEC.encode_many(records)) == records


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = CODEC.decode_one(data)
    assert isinstance(result, dict | Rejected)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_framed_garbage_with_the_right_schema_id_never_raises(body: bytes) -> None:
    result = CODEC.decode_one(frame(CODEC.schema_id, body))
    if isinstance(result, Rejected):
        assert result.stage is Stage.DECODE
        assert result.reason in {Reason.AVRO_DECODE_ERROR, Reason.TRAILING_BYTES}
        assert body.hex() not in result.detail or len(body) < 3  # payloads are not echoed


@given(interactions, st.data())
def test_every_truncation_of_a_valid_message_is_rejected(record: dict[str, Any], data: Any) -> None:
    encoded = CODEC.encode_one(record)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert isinstance(CODEC.decode_one(encoded[:cut]), Rejected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.EMPTY_PAYLOAD),
        (b"", Reason.EMPTY_PAYLOAD),
        (b'{"event_id": 1}', Reason.BAD_MAGIC_BYTE),
        (b"\x00\x00\x01", Reason.TRUNCATED_HEADER),
        (frame(999, b"\x02a"), Reason.UNKNOWN_SCHEMA_ID),
        (b"\x00" * 20_000, Reason.TOO_LARGE),
    ],
)
def test_each_malformation_has_its_reason(value: bytes | None, reason: Reason) -> None:
    result = CODEC.decode_one(value)
    assert isinstance(result, Rejected)
    assert (result.stage, result.reason) == (Stage.DECODE, reason)
    assert result.detail


def test_trailing_bytes_are_rejected() -> None:
    good = CODEC.encode_one(_example())
    result = CODEC.decode_one(good + b"\x00")
    assert isinstance(result, Rejected) and result.reason is Reason.TRAILING_BYTES


def test_timestamps_decode_as_epoch_millis_ints() -> None:
    decoded = CODEC.decode_one(CODEC.encode_one(_example()))
    assert isinstance(decoded, dict)
    assert decoded["event_time"] == 1763798400000


def test_floats_keep_nan_and_inf_bit_for_bit() -> None:
    # Semantic validation (input-safety issue) decides whether NaN is allowed; the codec keeps it.
    decoded = CODEC.decode_one(CODEC.encode_one(_example() | {"item_age_hours": math.inf}))
    assert isinstance(decoded, dict) and decoded["item_age_hours"] == math.inf


def test_unregistered_schema_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="schemas register"):
        AvroCodec(SCHEMAS["Interaction"], ManifestSchemaIds(Manifest.empty()), SUBJECT)


def test_a_message_written_with_another_record_is_rejected_not_crashing() -> None:
    manifest, _, _ = Manifest.empty().register(SUBJECT, SCHEMAS["Interaction"])
    manifest, label_version, _ = manifest.register("feed.labels.v1-value", SCHEMAS["Label"])
    ids = ManifestSchemaIds(manifest)
    labels = AvroCodec(SCHEMAS["Label"], ids, "feed.labels.v1-value")
    interactions_codec = AvroCodec(SCHEMAS["Interaction"], ids, SUBJECT)
    label = {
        "event_id": "e",
        "user_id": "u",
        "item_id": "i",
        "engaged": True,
        "event_time": 1,
        "label_time": 2,
    }
    result = interactions_codec.decode_one(labels.encode_one(label))
    assert isinstance(result, Rejected) and result.reason is Reason.AVRO_DECODE_ERROR
    assert f"schema id {label_version.id}" in result.detail


def _example() -> dict[str, Any]:
    return interaction(event_id="e1")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_fast_batch_decoder_equals_decode_one_on_any_bytes(data: st.DataObject) -> None:
    """decode_many (cavro fast path + nonce) gives exactly decode_one's answer for valid
    values, mutated ones (bit flips, cuts, trailing bytes) and garbage behind a valid header."""
    codec = make_codec()
    good = codec.encode_many([interaction(event_id=f"e{i}") for i in range(3)])
    values: list[bytes | None] = []
    for _ in range(data.draw(st.integers(1, 12))):
        base = bytearray(data.draw(st.sampled_from(good)))
        kind = data.draw(st.sampled_from(["same", "flip", "cut", "trail", "garbage", "none"]))
        if kind == "flip":
            i = data.draw(st.integers(5, len(base) - 1))
            base[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            base = base[: data.draw(st.integers(0, len(base) - 1))]
        elif kind == "trail":
            base += data.draw(st.binary(min_size=1, max_size=9))
        elif kind == "garbage":
            base = base[:5] + bytearray(data.draw(st.binary(max_size=120)))
        values.append(None if kind == "none" else bytes(base))

    def outcome(r: object) -> object:  # fastavro's details name buffer addresses: compare reasons
        return (r.stage, r.reason) if isinstance(r, Rejected) else r

    assert [outcome(r) for r in codec.decode_many(values)] == [
        outcome(codec.decode_one(v)) for v in values
    ]
