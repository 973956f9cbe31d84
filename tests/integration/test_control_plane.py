"""The retraining loop end to end on the real stack: concept drift injected into a live stream
with delayed labels → the label join's detector fires → a retrain request → a challenger trained
on the replayed window and put in shadow → promoted by policy → the scoring worker hot-swaps."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.scoring.registry import MlflowRegistry
from services.synthetic.world import Drift, World, strip_private
from services.training.pipeline import train_and_register
from streams.adapters import feature_spec, feature_store
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack, free_port
from tests.integration.pipeline_env import (
    Pipeline,
    make_pipeline,
    run_cli,
    start_control_plane,
    with_model,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
ONSET = 6000  # events before the world turns: 1,000 labels per partition to learn the baseline


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    overrides = {
        "drift": {"cooldown_seconds": 300, "min_events": 500},
        "retrain": {
            "min_labelled": 1000,
            "min_labels": 300,
            "min_shadow_seconds": 2,
            "window_seconds": 600,
            "max_events": 1500,  # per partition: a small window keeps training to seconds
            "promote_margin": 0.0,
            "retry_seconds": 1.0,  # a request waiting for labels is tried again soon
        },
        "batch": {"max_messages": 500, "timeout_seconds": 0.05},
    }
    for base in make_pipeline(stack, tmp_path, **overrides):
        p = with_model(base, f"loop-{tmp_path.name[-20:]}", poll_seconds=1.0)
        spec = feature_spec(p.settings)
        history = p.world.events(4000, start_index=30_000_000)
        labels = {lab["event_id"]: lab["engaged"] for lab in p.world.labels(history)}
        train_and_register(
            MlflowRegistry(p.settings), spec, feature_store(p.settings, spec), history, labels
        )
        yield p


def test_concept_drift_is_detected_retrained_shadowed_and_promoted(pipeline: Pipeline) -> None:
    s = pipeline.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | pipeline.env()
    port = free_port()  # the control plane's /metrics: the label join's figures
    env |= {
        "STREAMSCORE_METRICS__ENABLED": "true",
        "STREAMSCORE_METRICS__CONTROL_PLANE_PORT": str(port),
        "STREAMSCORE_METRICS__HOST": "127.0.0.1",
    }
    control, lines, reader = start_control_plane(env)
    worker = scoring_worker(s)
    summary: dict[str, Any] = {}
    scoring = threading.Thread(target=lambda: summary.update(worker.run().to_dict()))
    scoring.start()
    registry = MlflowRegistry(s)
    # The same users and items as the features in Redis; the world turns at ONSET.
    world = World(
        feature_spec(s),
        n_users=400,
        n_items=150,
        seed=7,
        # Event times start now (the stream starts at index 60,000) and advance at 2,000/s.
        start_time_ms=int(time.time() * 1000) - 30_000,
        rate_per_second=2000,
        drift=Drift("concept", 60_000 + ONSET, 0, 1.0),
    )
    codec, label_codec = pipeline.codec("Interaction"), pipeline.codec("Label")
    from confluent_kafka import Producer

    from services.kafka.config import producer_config

    producer = Producer(producer_config(s))
    sent, index, history = 0, 60_000, []
    deadline = time.monotonic() + 180
    try:
        # Labels must flow only once the control plane owns the labels topic's partitions
        # (its group starts at the latest offsets).
        joined = time.monotonic() + 90
        while not any("Setting newly assigned partitions" in line for line in lines):
            assert time.monotonic() < joined and control.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.5)
        wait_for(
            lambda: worker.membership.assigned_at is not None, 90, "the scoring worker's partitions"
        )
        while time.monotonic() < deadline:
            raw = world.events(500, start_index=index)
            # Paced to the world's clock: events more than 300 s ahead of now are refused
            # (time_out_of_window), and the quality book filters by event time.
            time.sleep(max(0.0, (raw[-1]["event_time"] - time.time() * 1000) / 1000 - 1.0))
            index += 500
            events = [strip_private(e) for e in raw]
            for e, v in zip(events, codec.encode_many(events), strict=True):
                producer.produce(s.topics.events, key=e["user_id"].encode(), value=v)
            producer.flush(10)
            # Labels arrive after the predictions were stored (as in production).
            store = worker.predictions_store
            assert store is not None
            last = events[-1]["event_id"]
            try:
                wait_for(
                    lambda s=store, e=last: s.get_many("served", [e])[0] is not None, 120, "stored"
                )
            except AssertionError as exc:  # say what the worker and the control plane were doing
                state = (
                    f"holding={worker.flow.holding} assigned={worker.membership.assigned_at} "
                    f"sent={sent} "
                    f"loop {time.monotonic() - worker.last_loop:.1f} s ago, "
                    f"thread alive={scoring.is_alive()}"
                )
                frame = sys._current_frames().get(scoring.ident or -1)
                stack = "".join(traceback.format_stack(frame))[-3000:] if frame else "(ended)"
                raise AssertionError(f"{exc}; {state}\n{stack}\n" + "".join(lines)[-3000:]) from exc
            for lab in world.labels(raw):
                lab = lab | {"label_time": lab["event_time"] + 500}
                producer.produce(
                    s.topics.labels, key=lab["event_id"].encode(), value=label_codec.encode_one(lab)
                )
            producer.flush(10)
            sent += len(events)
            history = registry.history()
            decided = any("stays challenger" in line or "promoted v" in line for line in lines)
            if any(h.event_type == "promoted" for h in history) or decided:
                break
            assert control.poll() is None, "".join(lines)[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # noqa: S310
            scraped = r.read().decode()
        if any(h.event_type == "promoted" for h in history):  # the worker hears it and swaps
            wait_for(lambda: worker.serving.champion.version == "2", 60, "the swap to v2")
        worker.request_stop()
        scoring.join(60)
    finally:
        worker.request_stop()
        control.terminate()
        control.wait(timeout=60)
        reader.join(10)
        if control.stderr is not None:
            control.stderr.close()
    log = "".join(lines)
    assert "concept drift" in log and "retrain requested" in log, log[-3000:]
    kinds = [(h.event_type, h.actor) for h in history]
    assert ("shadow_started", "control-plane") in kinds, (kinds, log[-3000:])
    assert ("promoted", "control-plane") in kinds, (kinds, log[-2000:])
    promoted = next(h for h in history if h.event_type == "promoted")
    assert promoted.from_version == "1" and promoted.to_version == "2"
    assert "online log loss" in promoted.reason
    assert registry.rollout_state().champion == "2"
    assert summary["swaps"] >= 2  # into shadow, then the promotion
    assert 'streamscore_labels_joined_total{outcome="matched"}' in scraped
    assert 'streamscore_online_log_loss{model_version="1",variant="champion"}' in scraped
    assert 'streamscore_drift_signals_total{detector="ADWIN",signal="error"}' in scraped


def test_the_quality_book_is_rebuilt_after_a_restart(pipeline: Pipeline) -> None:
    """A restarted control plane rebuilds its book from the labels its group already handled
    (up to the committed offsets; the rest the agent reads live), joined to stored predictions.
    Hand-made rows: 300 labels handled, 100 not yet; served scores of 0.8 on engaged events."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from services.kafka.config import consumer_config, producer_config
    from services.labels.store import Stored
    from streams.adapters import prediction_store
    from streams.control.loop import rebuild_book
    from streams.control.state import build_state

    s = pipeline.settings
    group = f"control-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    labels = [
        {
            "event_id": f"rebuild-{i}",
            "user_id": "u-000001",
            "item_id": "i-000001",
            "engaged": i % 2 == 0,
            "event_time": now - 60_000 + i,
            "label_time": now - 30_000 + i,
        }
        for i in range(400)
    ]
    prediction_store(s).put_many(
        "served", [(lab["event_id"], Stored("1", "champion", 0.8)) for lab in labels]
    )
    codec = pipeline.codec("Label")
    producer = Producer(producer_config(s))

    def send(batch: list[dict[str, Any]]) -> None:
        for lab in batch:
            producer.produce(
                s.topics.labels, key=lab["event_id"].encode(), value=codec.encode_one(lab)
            )
        assert producer.flush(30) == 0

    send(labels[:300])
    consumer = Consumer(consumer_config(s, group))  # the control plane's group, as faust commits
    parts = consumer.list_topics(s.topics.labels, timeout=10).topics[s.topics.labels].partitions
    ends = [
        TopicPartition(
            s.topics.labels,
            p,
            consumer.get_watermark_offsets(TopicPartition(s.topics.labels, p), 10)[1],
        )
        for p in parts
    ]
    consumer.commit(offsets=ends, asynchronous=False)
    consumer.close()
    send(labels[300:])  # not handled yet: the live agent reads these
    state = build_state(s)
    assert rebuild_book(state, group) == 300
    q = state.book.quality("1", "champion")
    assert q["count"] == 300
    assert abs(q["log_loss"] - (-(np.log(0.8) + np.log(0.2)) / 2)) < 1e-9  # half engaged


def test_ops_can_ask_for_a_retrain_by_hand(pipeline: Pipeline) -> None:
    before = int(time.time() * 1000)
    out = run_cli(
        pipeline.settings, "--json", "retrain", "--reason", "bad release", "--since", "2h"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    printed = json.loads(out.stdout)
    [message] = pipeline.read("RetrainRequest", 1, timeout=30)
    request = pipeline.codec("RetrainRequest").decode_one(message.value())
    assert request == printed
    assert request["reason"] == "manual: bad release" and request["requested_by"].startswith("cli:")
    assert abs(request["window_start"] - (before - 2 * 3600 * 1000)) < 60_000
