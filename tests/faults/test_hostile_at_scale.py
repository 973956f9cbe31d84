"""Hostile input at scale: 10,000 generated messages through the real worker on the real
stack, in bounded time. Every message ends as a prediction or a dead letter; good and evolved
events are predicted, unreadable ones dead-lettered (the expectation comes from how each was
made, not from the worker)."""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import parse_record
from services.codec.wire import frame
from streams.runtime import scoring_worker
from tests.faults.harness import account, record, send
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline, world_events

pytestmark = [pytest.mark.integration]
N = 10_000


def test_ten_thousand_hostile_messages(stack: Stack, tmp_path: Path) -> None:
    p = next(make_pipeline(stack, tmp_path, batch={"max_messages": 500}))
    codec = p.codec("Interaction")
    # An evolved writer: the producer's newer schema adds an optional field (FULL compatible).
    schemas_dir = p.settings.schema_registry.schemas_dir
    assert schemas_dir is not None
    source = copy.deepcopy(codec.record.source)
    source["fields"].append({"name": "experiment", "type": ["null", "string"], "default": None})
    evolved = parse_record(source, Path("Interaction.avsc"))
    manifest = Manifest.load(schemas_dir / MANIFEST_FILE)
    manifest, _, _ = manifest.register(codec.subject, evolved)
    manifest.dump(schemas_dir / MANIFEST_FILE)
    evolved_codec = AvroCodec(evolved, ManifestSchemaIds(manifest), codec.subject)
    other_id = p.codec("Prediction").schema_id

    rng = random.Random(20261130)  # noqa: S311 (test data, reproducible)
    events = world_events(p, 3000)
    good = codec.encode_many(events)
    items: list[tuple[Any, bytes, list[tuple[str, bytes | None]], str | None]] = []
    expect: list[str] = []  # predicted, dead, or either

    def add(key: Any, value: bytes, headers: Any, event_id: str | None, outcome: str) -> None:
        items.append((key, value, headers, event_id))
        expect.append(outcome)

    kinds = [
        "good", "evolved", "garbage", "truncated", "bitflip", "unknown_id", "other_subject",
        "nan", "huge_string", "odd_key", "huge_key", "many_headers", "big_header_value",
    ]  # fmt: skip
    for i in range(N - 3):
        kind = kinds[i % len(kinds)]
        j = rng.randrange(len(events))
        event, value = events[j], good[j]
        fresh = event | {"event_id": f"h{i}-{event['event_id']}"}
        key = event["user_id"].encode()
        if kind == "good":
            add(key, codec.encode_one(fresh), [], fresh["event_id"], "predicted")
        elif kind == "evolved":
            body = evolved_codec.encode_one(fresh | {"experiment": "b"})
            add(key, body, [], fresh["event_id"], "predicted")
        elif kind == "garbage":
            add(key, rng.randbytes(rng.randrange(0, 400)), [], None, "dead")
        elif kind == "truncated":
            add(key, value[: rng.randrange(0, len(value) - 1)], [], None, "dead")
        elif kind == "bitflip":
            # Anywhere after the event id (the first field), which then still names the input.
            body = codec.encode_one(fresh)
            pos = rng.randrange(5 + 1 + len(fresh["event_id"].encode()), len(body))
            flipped = body[:pos] + bytes([body[pos] ^ (1 << rng.randrange(8))]) + body[pos + 1 :]
            add(key, flipped, [], fresh["event_id"], "either")
        elif kind == "unknown_id":
            add(key, frame(rng.randrange(10**6, 2**31), value[5:]), [], None, "dead")
        elif kind == "other_subject":
            add(key, frame(other_id, value[5:]), [], None, "dead")
        elif kind == "nan":
            field = rng.choice(["item_age_hours", "network_rtt_ms"])
            bad = rng.choice([math.nan, math.inf, -math.inf])
            add(key, codec.encode_one(fresh | {field: bad}), [], fresh["event_id"], "dead")
        elif kind == "huge_string":
            long = fresh | {"user_id": "u" * rng.choice([5_000, 50_000])}
            add(key, codec.encode_one(long), [], fresh["event_id"], "dead")
        elif kind == "odd_key":
            odd = rng.choice([None, b"", bytes(range(256))[:40], "é\u0000🙂".encode()])
            add(odd, codec.encode_one(fresh), [], fresh["event_id"], "predicted")
        elif kind == "huge_key":
            add(b"k" * 3000, codec.encode_one(fresh), [], fresh["event_id"], "dead")
        elif kind == "many_headers":
            headers = [(f"h{k}", b"v") for k in range(100)]
            add(key, codec.encode_one(fresh), headers, fresh["event_id"], "dead")
        else:
            add(key, codec.encode_one(fresh), [("x", b"v" * 10_000)], fresh["event_id"], "dead")
    # Header names of 2 MB: the producer's compression gets them past the broker's limit.
    for k in range(3):
        fresh = events[k] | {"event_id": f"big-name-{k}"}
        add(b"u", codec.encode_one(fresh), [("n" * 2_000_000, b"x")], fresh["event_id"], "dead")

    started = time.monotonic()
    sent = send(p, items, **{"message.max.bytes": 10_000_000, "compression.type": "zstd"})
    summary = scoring_worker(p.settings).run(max_events=len(items), idle_timeout=60)
    outcomes: dict[int, str] = {}
    tally = account(p, sent, outcomes=outcomes)
    seconds = time.monotonic() - started
    assert summary.consumed == len(items) == tally.sent
    assert tally.lost == 0 and tally.duplicated == 0
    wrong = [
        (i, expect[i], outcomes[i])
        for i in range(len(items))
        if expect[i] != "either" and outcomes[i] != expect[i]
    ]
    assert not wrong, wrong[:10]
    assert {"unknown_schema_id", "avro_decode_error", "header_too_large", "key_too_large"} <= set(
        tally.reasons
    )
    record(
        f"hostile input at scale ({len(items):,} messages, {len(kinds)} kinds + 2 MB header names)",
        "each good or evolved event predicted, each unreadable one dead-lettered with its reason",
        f"as expected; {len(tally.reasons)} distinct reasons",
        tally,
        seconds,
    )
