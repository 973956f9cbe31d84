"""The feature-log reader on a real broker: it reads the time range the training events need
(by offsets_for_times, not the newest messages), keeps only their labelled rows, and counts
what it left out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from services.core.metrics import FEATURE_LOG_SKIPPED
from services.features.log import feature_log_records
from services.features.store import Lookup
from services.kafka.config import producer_config
from services.training.log_reader import LOG_SLACK_MS, read_training_rows
from streams.adapters import feature_spec
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]
HOUR_MS = 3_600_000


@pytest.fixture
def delivery(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path, "delivery")


def _rows(spec: object, n: int, value: float) -> dict[str, Lookup]:
    return {
        g.name: Lookup(np.full((n, g.width), value, dtype=np.float32), np.ones(n, dtype=bool))
        for g in spec.groups  # type: ignore[attr-defined]
    }


def test_the_reader_takes_the_events_range_keeps_their_labelled_rows_and_counts_the_rest(
    delivery: Pipeline,
) -> None:
    p = delivery
    s, spec, codec = p.settings, feature_spec(p.settings), p.codec("FeatureLog")
    topic = s.topics.feature_log
    # Events of five hours ago: the records after their range are then not in the future,
    # which the broker refuses (log.message.timestamp.after.max.ms).
    t0 = int(time.time() * 1000) - 5 * HOUR_MS
    events = [e | {"event_time": t0 + i} for i, e in enumerate(world_events(p, 300))]
    ids = [str(e["event_id"]) for e in events]
    labelled = set(ids[:250])  # the last 50 have no label

    def record(event_ids: list[str], value: float, spec_version: str | None = None) -> bytes:
        [r] = feature_log_records(
            spec, "eta", event_ids, ["1"] * len(event_ids), _rows(spec, len(event_ids), value), 0
        )
        return codec.encode_one(r | ({"spec_version": spec_version} if spec_version else {}))

    producer = Producer(producer_config(s))
    out_of_range = t0 - LOG_SLACK_MS - HOUR_MS
    sent = [
        (record(ids[:10], 9.0), out_of_range),  # stale rows before the range: never read
        (record(ids, 1.0), t0 + 1000),  # the rows served
        (b"\x00not a feature log", t0 + 2000),
        (record(ids[:5], 7.0, spec_version="other"), t0 + 3000),
        (record(["elsewhere-1", "elsewhere-2"], 5.0), t0 + 4000),
        (record(ids[10:20], 8.0), out_of_range),  # produced late with an old time: skipped
    ]
    # After the range: more records than the old reader's newest-per-partition window.
    sent += [(record([f"later-{i}"], 3.0), t0 + LOG_SLACK_MS + HOUR_MS) for i in range(1200)]
    refused: list[str] = []
    for value, stamp in sent:
        producer.produce(
            topic,
            value=value,
            partition=0,
            timestamp=stamp,
            on_delivery=lambda err, _m: refused.append(str(err)) if err else None,
        )  # one partition's order
        producer.poll(0)
    assert producer.flush(30) == 0 and refused == []
    before = {r: FEATURE_LOG_SKIPPED.labels(reason=r)._value.get() for r in ("no_label",)}

    read = read_training_rows(s, spec, codec, topic, events, labelled, 60)

    assert len(read.index) == 250 and all(i in read.index for i in labelled)
    values = read.index.lookups(sorted(labelled))
    for g in spec.groups:
        assert np.all(values[g.name].values == 1.0)  # the served rows, none of the stale ones
    assert dict(read.skipped) == {
        "undecodable": 1,
        "other_spec": 1,
        "out_of_range": 1,
        "no_label": 50,
        "not_in_training_set": 2,
    }
    assert read.records == 4  # served, undecodable, other spec, other events: nothing later
    assert read.describe() == (
        f"feature log {topic}: 4 records read, 250 rows used; skipped: 50 rows with no label, "
        "2 rows of events not in this training set, 1 records of another feature spec, "
        "1 records logged outside the events' time range, 1 undecodable records"
    )
    assert FEATURE_LOG_SKIPPED.labels(reason="no_label")._value.get() == before["no_label"] + 50
