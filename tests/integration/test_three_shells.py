"""One core, three shells: the same events scored by the stream worker, the HTTP/file scorer and
a replay re-score give the same prediction records, the same refusals and the same per-event
metrics (predictions per version and variant, refusals per stage and reason, missing features,
fallbacks). Batch-level counts (``batch_ok``) are left out: each shell cuts its own batches."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import REGISTRY

from services.kafka.config import consumer_config, producer_config
from services.kafka.topics import TopicSpec
from services.replay.plan import run_id
from streams.replay import ensure_targets, execute, fence, group_of, resolve
from streams.runtime import api_scorer, replay_rescorer, scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]

# Per-event metrics: (metric family, the sample labels that tell series apart).
COUNTED = (
    "streamscore_predictions_total",
    "streamscore_messages_rejected_total",
    "streamscore_fallbacks_total",
    "streamscore_feature_lookups_total",
)
PER_BATCH = {"batch_ok", "error"}
VOLATILE = ("scored_at",)  # the time each shell scored at


def _counts() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in COUNTED and sample.labels.get("outcome") not in PER_BATCH:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path, domain="payments")


def _events(p: Pipeline) -> list[dict[str, Any]]:
    """Good events, events of entities without features, and events a rule refuses."""
    events = world_events(p, 400, start=31_000_000)
    for e in events[::40]:
        e["amount"] = -1.0  # out_of_range: a dead letter at the validate stage
    return events


def test_the_three_shells_give_the_same_outputs_and_metrics(pipeline: Pipeline) -> None:
    p = pipeline
    events = _events(p)
    wanted = {e["event_id"] for e in events}
    version = p.trained.version

    # 1. The HTTP/file scorer (the object the API and score-file call).
    scorer = api_scorer(p.settings)
    before = _counts()
    scored = scorer.score(events, "three-shells")
    via_scorer = _delta(before, _counts())
    scorer_predictions = {r["event_id"]: r for r in scored.predictions.values()}
    scorer_refused = {
        events[i]["event_id"]: (r.stage.value, r.reason.value) for i, r in scored.refused.items()
    }
    assert len(scorer_predictions) + len(scorer_refused) == len(events)
    assert scorer_refused  # the check has refusals to compare

    # 2. The stream worker, on a topic of its own input.
    codec = p.codec("Transaction")
    key_field = scorer.domain.key_field
    producer = Producer(producer_config(p.settings))
    for e, v in zip(events, codec.encode_many(events), strict=True):
        producer.produce(p.settings.topics.events, key=str(e[key_field]).encode(), value=v)
    assert producer.flush(30) == 0
    before = _counts()
    summary = scoring_worker(p.settings).run(max_events=len(events), idle_timeout=60)
    via_worker = _delta(before, _counts())
    assert summary.consumed == len(events)
    decode = p.codec("Prediction").decode_one
    worker_predictions = {
        r["event_id"]: r
        for r in (decode(m.value()) for m in p.read("Prediction", summary.predictions))
        if r["event_id"] in wanted
    }
    letters = p.codec("DeadLetter")
    worker_refused = {}
    for m in p.read("DeadLetter", summary.dead_letters):
        record = letters.decode_one(m.value())
        event = codec.decode_one(record["original_value"])
        worker_refused[event["event_id"]] = (record["stage"], record["reason"])

    # 3. A replay re-scoring the input range with the champion's version, into a sandbox.
    run = run_id({"test": uuid.uuid4().hex})
    sandbox, dlq = f"sandbox.{uuid.uuid4().hex[:8]}.v1", f"sandbox.{uuid.uuid4().hex[:8]}.dlq"
    consumer = Consumer(consumer_config(p.settings, group_of(run)))
    try:
        plan, _ = resolve(
            consumer,
            run,
            p.settings.topics.events,
            sandbox,
            from_ms=int(time.time() * 1000) - 3_600_000,
            model=version,
            dead_letters=dlq,
        )
        ensure_targets(
            p.settings,
            [
                TopicSpec(sandbox, 3, "string", "", "", "", ""),
                TopicSpec(dlq, 1, "string", *[""] * 4),
            ],
        )
        rescorer = replay_rescorer(p.settings, plan)
        before = _counts()
        outcome = execute(plan, consumer, fence(p.settings, run), rescorer)
        via_replay = _delta(before, _counts())
    finally:
        consumer.close()
    assert outcome.read == len(events)
    replay_predictions = {
        r["event_id"]: r
        for r in (decode(m.value()) for m in p.read_topic(sandbox, outcome.predictions))
    }
    replay_refused = {}
    for m in p.read_topic(dlq, outcome.dead_letters):
        record = letters.decode_one(m.value())
        replay_refused[codec.decode_one(record["original_value"])["event_id"]] = (
            record["stage"],
            record["reason"],
        )

    def same(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in VOLATILE}

    assert scorer_refused == worker_refused == replay_refused
    assert sorted(scorer_predictions) == sorted(worker_predictions) == sorted(replay_predictions)
    for event_id, record in worker_predictions.items():
        assert same(scorer_predictions[event_id]) == same(record), event_id
        assert same(replay_predictions[event_id]) == same(record), event_id
    assert via_scorer == via_worker == via_replay
