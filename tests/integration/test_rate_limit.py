"""One noisy producer through the real worker with limits on: its excess is dead-lettered with
reason rate_limited, every quiet producer is scored in full, and nothing is lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(
        stack, tmp_path, rate_limit={"enabled": True, "rate_per_second": 20.0, "burst": 100}
    )


def test_noisy_producer_does_not_starve_the_others(pipeline: Pipeline) -> None:
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 1500, start=120_000)
    values = codec.encode_many(events)
    batch = [
        (e["user_id"].encode(), v, [("producer-id", b"noisy")])
        for e, v in zip(events[:1200], values[:1200], strict=True)
    ]
    batch += [
        (e["user_id"].encode(), v, [("producer-id", f"quiet-{i % 6}".encode())])
        for i, (e, v) in enumerate(zip(events[1200:], values[1200:], strict=True))
    ]
    pipeline.produce(batch)
    summary = scoring_worker(pipeline.settings).run(max_events=len(batch), idle_timeout=30)
    assert summary.consumed == summary.predictions + summary.dead_letters == len(batch)
    assert summary.rejected_by_reason == Counter({"rate_limited": summary.dead_letters})

    by_id = {e["event_id"]: i for i, e in enumerate(events)}
    scored = [
        pipeline.codec("Prediction").decode_one(m.value())["event_id"]
        for m in pipeline.read("Prediction", summary.predictions)
    ]
    quiet_scored = sum(1 for eid in scored if by_id[eid] >= 1200)
    noisy_scored = sum(1 for eid in scored if by_id[eid] < 1200)
    assert quiet_scored == 300  # every quiet producer's event (50 each, under the burst)
    # The noisy one got its burst plus what refilled while the run lasted, not more.
    assert 100 <= noisy_scored <= 100 + 20 * (summary.elapsed_seconds + 1)
    assert summary.dead_letters == 1200 - noisy_scored


@pytest.fixture
def throttled(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(
        stack,
        tmp_path,
        rate_limit={
            "enabled": True,
            "rate_per_second": 200.0,
            "burst": 100,
            "policy": "backpressure",
            "pause_seconds": 0.2,
        },
    )


def test_backpressure_slows_a_producer_down_without_refusing_anything(throttled: Pipeline) -> None:
    codec = throttled.codec("Interaction")
    events = world_events(throttled, 700, start=125_000)
    values = codec.encode_many(events)
    # The noisy producer's messages share one key, so they sit in one partition, in order.
    batch = [(b"noisy-key", v, [("producer-id", b"noisy")]) for v in values[:600]]
    batch += [
        (e["user_id"].encode(), v, [("producer-id", b"quiet")])
        for e, v in zip(events[600:], values[600:], strict=True)
    ]
    throttled.produce(batch)
    summary = scoring_worker(throttled.settings).run(max_events=len(batch), idle_timeout=30)
    assert summary.dead_letters == 0
    assert summary.predictions == summary.consumed == len(batch)
    assert summary.deferred > 0
    # 600 messages at 200/s after a burst of 100 cannot take less than about 2.5 s.
    assert summary.elapsed_seconds >= 2.0
    scored = [
        throttled.codec("Prediction").decode_one(m.value())["event_id"]
        for m in throttled.read("Prediction", len(batch))
    ]
    assert sorted(scored) == sorted(e["event_id"] for e in events)
    noisy_order = [eid for eid in scored if eid in {e["event_id"] for e in events[:600]}]
    assert noisy_order == [e["event_id"] for e in events[:600]]  # order kept in the partition
