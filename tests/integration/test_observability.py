"""A worker that processed a known stream: its /metrics counters equal what was sent, /healthz
and /readyz answer, and readiness names a dependency that is down."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.core.logging import JsonFormatter
from services.synthetic.hostile import hostile_values
from streams.runtime import scoring_worker, worker_probes
from tests.integration.conftest import Stack, free_port
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback URL)
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, x) in ls for k, x in labels.items())
    )


def test_metrics_of_a_known_stream_equal_what_was_sent(pipeline: Pipeline) -> None:
    port = free_port()
    s = pipeline.settings
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 1200)
    bad = hostile_values(codec, events[0])
    sent = [
        (e["user_id"].encode(), v, [])
        for e, v in zip(events, codec.encode_many(events), strict=True)
    ]
    sent += [(b"hostile", v, []) for v, _, _ in bad]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | pipeline.env()
    env |= {
        "STREAMSCORE_METRICS__ENABLED": "true",
        "STREAMSCORE_METRICS__PORT": str(port),
        "STREAMSCORE_METRICS__HOST": "127.0.0.1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "scoring"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                code, _ = _get(f"{base}/healthz")
                if code == 200:
                    break
            except OSError:
                pass
            assert worker.poll() is None and time.monotonic() < deadline, "worker did not start"
            time.sleep(0.3)
        pipeline.produce(sent)
        assert len(pipeline.read("Prediction", len(events))) == len(events)
        # The lag is sampled every 5 s: wait for a sample taken after the last batch.
        lag_deadline = time.monotonic() + 30
        while True:
            code, body = _get(f"{base}/metrics")
            assert code == 200
            m = _samples(body.decode())
            lags = [v for (n, _), v in m.items() if n == "streamscore_consumer_lag_messages"]
            if lags and max(lags) == 0:
                break
            assert time.monotonic() < lag_deadline, f"lag never reached 0: {lags}"
            time.sleep(0.5)
        ready_code, ready = _get(f"{base}/readyz")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()[-2000:]

    topic_in, topic_out = s.topics.events, s.topics.predictions
    assert _total(m, "streamscore_messages_consumed_total", topic=topic_in) == len(sent)
    assert _total(m, "streamscore_predictions_total") == len(events)
    assert _total(m, "streamscore_predictions_total", variant="champion") == len(events)
    assert _total(m, "streamscore_messages_produced_total", topic=topic_out) == len(events)
    assert _total(m, "streamscore_messages_produced_total", topic=f"{topic_in}.dlq") == len(bad)
    expected = Counter(reason for _, _, reason in bad)
    for reason, n in expected.items():
        assert _total(m, "streamscore_messages_rejected_total", reason=reason) == n, reason
    assert _total(m, "streamscore_messages_rejected_total") == len(bad)
    assert _total(m, "streamscore_event_to_prediction_seconds_count") == len(events)
    assert _total(m, "streamscore_batch_messages_sum") == len(sent)
    missing = sum(1 for e in events if e["user_id"] in pipeline.missing_users)
    assert _total(m, "streamscore_feature_lookups_total", outcome="missing_user") == missing
    champion = pipeline.trained.version
    assert _total(m, "streamscore_model_info", model_version=champion, role="champion") == 1
    lag = [v for (n, _), v in m.items() if n == "streamscore_consumer_lag_messages"]
    assert lag and max(lag) == 0  # everything consumed
    assert ready_code == 200
    assert json.loads(ready)["checks"] == {
        "broker": "ok",
        "redis": "ok",
        "model": "ok",
        "threads": "ok",
        "partitions": "ok",
    }


def test_readiness_names_a_dependency_that_is_down(pipeline: Pipeline) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = pipeline.settings.model_copy(
        update={"redis": pipeline.settings.redis.model_copy(update={"url": dead_redis})}
    )
    worker = scoring_worker(settings)
    probes = worker_probes(settings, worker)
    code, body = probes.readyz()
    checks = json.loads(body)["checks"]
    assert code == 503 and checks["broker"] == "ok" and checks["model"] == "ok"
    assert "ConnectionError" in checks["redis"]
    assert probes.healthz()[0] == 200  # alive: a restart would not bring Redis back


def test_dead_letter_logs_carry_stable_fields_and_no_payload(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"\x00\x00\x00\x27\x0f" + b"card=4111111111111111"  # schema id 9999, with "PII"
    pipeline.produce([(b"k", secret, [])])
    with caplog.at_level(logging.DEBUG, logger="streams.worker"):
        summary = scoring_worker(pipeline.settings).run(max_events=1, idle_timeout=30)
    assert summary.dead_letters == 1
    (record,) = [r for r in caplog.records if r.getMessage().startswith("dead letter")]
    line = json.loads(JsonFormatter().format(record))
    assert line["topic"] == pipeline.settings.topics.events
    assert (line["partition"], line["stage"], line["reason"]) == (
        record.partition,  # type: ignore[attr-defined]
        "decode",
        "unknown_schema_id",
    )
    assert isinstance(line["offset"], int)
    assert "4111" not in json.dumps(line) and all(
        "4111" not in r.getMessage() for r in caplog.records
    )
