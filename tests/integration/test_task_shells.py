"""The HTTP API, `score-file` and the SDK answer a regression and a 3-class domain with the
fields the domain's Prediction schema declares, and the same values as the stream worker."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from streams.adapters import redis_client
from streams.api import create_app
from streams.api_keys import ApiKeys
from streams.runtime import scoring_worker
from streams.sdk import PredictionConsumer
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, cli_in_process, make_pipeline, world_events
from tests.integration.test_api import Server, call

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
BANDS = ("UNDER_25", "FROM_25_TO_35", "OVER_35")


@pytest.fixture(params=["delivery", "delivery_band"])
def pipeline(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path, domain=request.param)


def test_http_file_and_sdk_answer_the_fields_the_prediction_schema_declares(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    p = pipeline
    s = p.settings
    multiclass = s.domain == "delivery_band"
    declared = {f["name"] for f in p.codec("Prediction").record.source["fields"]}
    assert ({"predicted_class", "probabilities"} <= declared) == multiclass
    events = world_events(p, 60, start=7_000)
    wanted = {e["event_id"] for e in events}

    # The stream worker, read back through the SDK.
    codec = p.codec(s.topics.event_record)
    p.produce(
        [
            (e["courier_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    scoring_worker(s).run(max_events=len(events), idle_timeout=60)
    sdk = {}
    with PredictionConsumer(f"task-shells-{uuid.uuid4().hex[:8]}", s) as consumer:
        for _ in range(200):
            x = consumer.poll(1.0)
            if x is not None and x.event_id in wanted:
                sdk[x.event_id] = x
            if len(sdk) == len(events):
                break
    assert len(sdk) == len(events)
    for x in sdk.values():
        assert set(x.record) == declared
        if multiclass:
            assert set(x.probabilities) == set(BANDS)
            assert abs(sum(x.probabilities.values()) - 1.0) < 1e-9
            assert x.predicted_class == max(BANDS, key=lambda c: x.probabilities[c])
            assert x.score == max(x.probabilities.values())
        else:
            assert x.predicted_class is None and x.probabilities == {}
            assert x.score > 1.0  # minutes, not a probability

    # HTTP: the record's fields but the stream's bookkeeping, and the same values.
    _, token = ApiKeys(redis_client(s), s.redis.key_prefix).create("tests", 1000, 1000)
    server = Server(create_app(s))
    try:
        code, _, body = call(f"{server.url}/v1/predict", {"events": events}, token)
    finally:
        server.stop()
    assert code == 200, body
    http = {a["event_id"]: a for a in body["predictions"]}
    assert set(http) == wanted
    for event_id, a in http.items():
        # The answer leaves out the record's stream bookkeeping (docs/clients.md), no more.
        assert set(a) == declared - {"prediction_id", "event_time", "scored_at"}, sorted(a)
        assert a["score"] == sdk[event_id].score
        if multiclass:
            assert a["predicted_class"] == sdk[event_id].predicted_class
            assert a["probabilities"] == sdk[event_id].probabilities
        else:
            assert "predicted_class" not in a and "probabilities" not in a

    # A file: score, then (multiclass) the top class and one probability column per class.
    source, out = tmp_path / "orders.csv", tmp_path / "scores.csv"
    pd.DataFrame(events).to_csv(source, index=False)
    ran = cli_in_process(p, "--json", "score-file", str(source), "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    with out.open(newline="") as f:
        rows = {r["event_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == wanted
    columns = set(next(iter(rows.values())))
    probability_columns = {f"probability__{c}" for c in BANDS}
    if multiclass:
        assert {"score", "predicted_class"} | probability_columns <= columns
    else:
        assert "score" in columns and not (columns & ({"predicted_class"} | probability_columns))
    for event_id, r in rows.items():
        assert float(r["score"]) == sdk[event_id].score
        if multiclass:
            assert r["predicted_class"] == sdk[event_id].predicted_class
            for c in BANDS:
                assert float(r[f"probability__{c}"]) == sdk[event_id].probabilities[c]
    assert json.loads(ran.stdout)["predictions"] == len(events)
