"""The feature log on a real broker: the worker logs every served row, once per batch, and the
retrainer's reader gives training those rows bit for bit after Redis has moved on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from services.core.settings import to_env
from services.features.assemble import assemble, lookup_requests
from services.retrain.trainer import Codecs, logged_rows
from services.training.dataset import build_training_set
from streams.adapters import feature_spec, feature_store, redis_client
from streams.api import create_app
from streams.api_keys import ApiKeys
from streams.cli import cli
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events
from tests.integration.test_api import Server, call

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def test_training_reads_back_the_rows_the_worker_served(pipeline: Pipeline, tmp_path: Path) -> None:
    s = pipeline.settings
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 1200)
    pipeline.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    spec = feature_spec(s)
    store = feature_store(s, spec)
    served = assemble(spec, events, store.get_many(lookup_requests(spec, events))).values
    summary = scoring_worker(s).run(max_events=len(events), idle_timeout=60)
    assert summary.predictions == len(events)

    # The entity features move after scoring: every user's row changes in Redis.
    keys, rows = pipeline.world.features("user")
    store.put_many("user", keys, rows + 1.0)
    codecs = Codecs(codec, codec, pipeline.codec("ModelEvent"), pipeline.codec("FeatureLog"))
    labels = {str(e["event_id"]): True for e in events}
    index = logged_rows(s, codecs, spec, events, labels)
    assert index is not None and len(index) == len(events)
    ts = build_training_set(spec, store, events, labels, logged=index)
    assert ts.sources == {"feature_log": len(events)}
    assert np.array_equal(ts.X, served, equal_nan=True)
    # Without the log, today's Redis: other rows, counted as such.
    now = build_training_set(spec, store, events, labels)
    assert now.sources == {"online_store_now": len(events)}
    assert not np.array_equal(now.X, served, equal_nan=True)

    # `train --feature-log` from files: the same rows, counted in the run.
    events_file, labels_file = tmp_path / "events.jsonl", tmp_path / "labels.csv"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    labels_file.write_text(
        "event_id,engaged\n"
        + "".join(f"{e['event_id']},{i % 3 == 0}\n" for i, e in enumerate(events)),
        encoding="utf-8",
    )
    env = to_env(s) | {"STREAMSCORE_MODEL__NAME": f"feature-log-{uuid.uuid4().hex[:8]}"}
    result = CliRunner().invoke(
        cli,
        ["train", "--events", str(events_file), "--labels", str(labels_file), "--feature-log",
         "--json"],
        env=env,
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["feature_rows"] == {"feature_log": len(events)}
    assert out["feature_log"]["rows"] == len(events) and out["feature_log"]["not_logged"] == 0


def test_an_http_answer_logs_its_rows_and_carries_the_decision(
    stack: Stack, tmp_path: Path
) -> None:
    made = make_pipeline(stack, tmp_path, "payments")
    p = next(made)
    s = p.settings
    _, token = ApiKeys(redis_client(s), s.redis.key_prefix).create("tests", 1000, 1000)
    events = world_events(p, 40)
    server = Server(create_app(s))
    try:
        code, _, body = call(f"{server.url}/v1/predict", {"events": events}, token)
    finally:
        server.stop()  # flushes the API's producer
    assert code == 200, body
    answers = body["predictions"]
    # payments declares a decision threshold of 0.5 (domain.json).
    assert [a["decision"] for a in answers] == [a["score"] >= 0.5 for a in answers]
    spec = feature_spec(s)
    codec = p.codec(s.topics.event_record)
    codecs = Codecs(codec, codec, p.codec("ModelEvent"), p.codec("FeatureLog"))
    index = logged_rows(s, codecs, spec, events, {str(e["event_id"]): 1 for e in events})
    assert index is not None and len(index) == len(events)
    assert all(str(e["event_id"]) in index for e in events)
    made.close()
