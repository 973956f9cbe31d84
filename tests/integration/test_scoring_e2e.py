"""End to end on the real stack: Avro events in (some hostile) → bounded worker run →
predictions + dead letters = input, and every score equals the offline model's score."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.codec.examples import load_example
from services.codec.factory import schemas_dir
from services.features.assemble import assemble, lookup_requests
from services.scoring.registry import MlflowRegistry
from services.synthetic.hostile import hostile_values
from streams.adapters import feature_spec, feature_store
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


@pytest.mark.smoke
def test_every_event_becomes_one_prediction_or_one_dead_letter(pipeline: Pipeline) -> None:
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 3000)
    template = events[0]
    bad = hostile_values(codec, template)
    sent = [
        (e["user_id"].encode(), v, [("seq", str(i).encode())])
        for i, (e, v) in enumerate(zip(events, codec.encode_many(events), strict=True))
    ]
    sent += [(b"hostile", v, [("seq", f"bad-{j}".encode())]) for j, (v, _, _) in enumerate(bad)]
    pipeline.produce(sent)

    worker = scoring_worker(pipeline.settings)
    summary = worker.run(max_events=len(sent), idle_timeout=60)
    assert summary.consumed == len(sent)
    assert (summary.predictions, summary.dead_letters) == (len(events), len(bad))

    predictions = [
        pipeline.codec("Prediction").decode_one(m.value())
        for m in pipeline.read("Prediction", len(events))
    ]
    letters = pipeline.read("DeadLetter", len(bad))
    assert len(predictions) + len(letters) == len(sent)
    assert sorted(p["event_id"] for p in predictions) == sorted(e["event_id"] for e in events)

    # Dead letters keep the original bytes and headers, and say where and why.
    dlq_codec = pipeline.codec("DeadLetter")
    expected = {f"bad-{j}": (v, stage, reason) for j, (v, stage, reason) in enumerate(bad)}
    for message in letters:
        record = dlq_codec.decode_one(message.value())
        assert isinstance(record, dict)
        seq = dict((h["key"], h["value"]) for h in record["original_headers"])["seq"].decode()
        value, stage, reason = expected.pop(seq)
        assert (record["original_value"], record["stage"], record["reason"]) == (
            value,
            stage,
            reason,
        )
        assert record["source_topic"] == pipeline.settings.topics.events
        assert dict(message.headers())["error.reason"] == reason.encode()
        assert record["detail"] and record["original_key"] == b"hostile"
    assert expected == {}

    # Scores equal what the registered model says offline for the same features.
    model = MlflowRegistry(pipeline.settings).load(alias="champion")
    spec = feature_spec(pipeline.settings)
    store = feature_store(pipeline.settings, spec)
    matrix = assemble(spec, events, store.get_many(lookup_requests(spec, events)))
    offline = dict(zip((e["event_id"] for e in events), model.predict(matrix.values), strict=True))
    by_id = {p["event_id"]: p for p in predictions}
    diffs = np.array([abs(by_id[i]["score"] - s) for i, s in offline.items()])
    assert diffs.max() < 1e-9
    assert {p["model_version"] for p in predictions} == {pipeline.trained.version}
    assert all(p["degraded"] is False for p in predictions)

    # Users without features are scored with declared defaults and flagged.
    for e in events:
        flagged = by_id[e["event_id"]]["missing_features"]
        assert flagged == (["user"] if e["user_id"] in pipeline.missing_users else [])
    assert any(e["user_id"] in pipeline.missing_users for e in events)


def test_examples_from_the_contract_are_scored(pipeline: Pipeline) -> None:
    """The committed example events (fixed times) are valid input too, given a wide window."""
    s = pipeline.settings
    record = load_example(
        schemas_dir(s) / "examples" / "Interaction" / "home_feed_ios.json",
        pipeline.codec("Interaction").record.source,
    )
    codec = pipeline.codec("Interaction")
    pipeline.produce([(b"u", codec.encode_one(record), [])])
    summary = scoring_worker(s).run(max_events=1, idle_timeout=30)
    assert (summary.predictions, summary.dead_letters) == (1, 0)
