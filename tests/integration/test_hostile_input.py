"""Hostile input through the real worker on the real stack: garbage bytes, truncated and
bit-flipped records, wrong schema ids, huge strings, NaN/inf, negative positions, far-future
times, odd unicode, odd keys and headers. The worker never dies, and predictions + dead letters =
input (bounded case count: each example is one batch through Kafka)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]
TOTALS = {"sent": 0, "predictions": 0, "dead_letters": 0}


@pytest.fixture(scope="module")
def pipeline(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path_factory.mktemp("hostile"))


odd_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
) | st.just("x" * 20_000)
odd_float = st.floats(allow_nan=True, allow_infinity=True)
changes = st.fixed_dictionaries(
    {},
    optional={
        "event_id": odd_text,
        "user_id": odd_text,
        "country": odd_text,
        "position": st.integers(-(2**31), 2**31 - 1),
        "session_depth": st.integers(-(2**31), 2**31 - 1),
        "item_age_hours": odd_float,
        "network_rtt_ms": st.none() | odd_float,
        "event_time": st.integers(-(2**62), 2**62),
    },
)


def values_strategy(p: Pipeline) -> st.SearchStrategy[list[tuple[Any, bytes, Any]]]:
    codec = p.codec("Interaction")
    events = world_events(p, 50, start=140_000)
    good = codec.encode_many(events)

    def flip(data: bytes, pos: int, bit: int) -> bytes:
        i = pos % len(data)
        return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]

    value = st.one_of(
        st.binary(max_size=300),
        st.sampled_from(good),
        st.builds(lambda v, n: v[:n], st.sampled_from(good), st.integers(0, 120)),
        st.builds(flip, st.sampled_from(good), st.integers(0, 200), st.integers(0, 7)),
        st.builds(
            lambda v, sid: b"\x00" + sid.to_bytes(4, "big") + v[5:],
            st.sampled_from(good),
            st.integers(0, 2**32 - 1),
        ),
        st.builds(lambda e, c: codec.encode_one(e | c), st.sampled_from(events), changes),
    )
    key = st.none() | st.binary(max_size=40) | st.just(b"k" * 3000)
    headers = st.lists(
        st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=50)), max_size=4
    )
    return st.lists(st.tuples(key, value, headers), min_size=1, max_size=120)


def _joined(batches: list[list[Any]]) -> list[Any]:
    return [m for b in batches for m in b]


def test_hostile_batches_never_kill_the_worker(pipeline: Pipeline) -> None:
    # Each example starts a worker (a group join: seconds), so an example is many hostile
    # batches at once: 3 examples of 15 batches each, random (hypothesis prints a failing seed).
    @settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(values_strategy(pipeline), min_size=15, max_size=15).map(_joined))
    def run(batch: list[tuple[Any, bytes, Any]]) -> None:
        pipeline.produce(batch)
        summary = scoring_worker(pipeline.settings).run(max_events=len(batch), idle_timeout=30)
        assert summary.consumed == len(batch)
        assert summary.predictions + summary.dead_letters == len(batch)
        for name, n in (
            ("sent", len(batch)),
            ("predictions", summary.predictions),
            ("dead_letters", summary.dead_letters),
        ):
            TOTALS[name] += n

    run()
    predictions = pipeline.read("Prediction", TOTALS["predictions"])
    letters = pipeline.read("DeadLetter", TOTALS["dead_letters"])
    assert len(predictions) + len(letters) == TOTALS["sent"]
    assert len(predictions) == TOTALS["predictions"]
    assert TOTALS["predictions"] > 0 and TOTALS["dead_letters"] > 0  # both paths were exercised
    for m in predictions:
        p = pipeline.codec("Prediction").decode_one(m.value())
        assert isinstance(p, dict) and math.isfinite(p["score"]) and 0 <= p["score"] <= 1
