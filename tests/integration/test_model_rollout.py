"""Model changes on the live stream: promotion mid-stream (exactly once, in order per
partition), a tampered version refused while scoring continues, shadow and canary through the
worker, rollback, and the start-up fallback to the last good champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from services.core import metrics
from services.core.settings import Settings
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import in_canary, plan_promote
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import (
    Pipeline,
    Ran,
    make_pipeline,
    with_model,
    with_two_versions,
    world_events,
)
from tests.integration.pipeline_env import cli_in_process as _cli
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline whose own model has two versions: v1 champion, v2 trained on other seeds."""
    for base in make_pipeline(
        stack, tmp_path, batch={"max_messages": 200, "timeout_seconds": 0.05}
    ):
        yield with_two_versions(base, f"rollout-{tmp_path.name[-24:]}")


def _send(p: Pipeline, events: list[dict[str, Any]]) -> None:
    codec = p.codec("Interaction")
    p.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )


def _predictions(
    p: Pipeline, n: int, record: str = "Prediction"
) -> list[tuple[int, int, dict[str, Any]]]:
    codec = p.codec(record)
    out = []
    for m in p.read(record, n):
        decoded = codec.decode_one(m.value())
        assert isinstance(decoded, dict)
        out.append((m.partition(), m.offset(), decoded))
    return out


def _served_by(p: Pipeline, version: str) -> bool:
    """Whether the prediction topic holds a score by ``version`` yet (a read of at most ~1.5 s)."""
    codec = p.codec("Prediction")

    def by_version(m: Any) -> bool:
        decoded = codec.decode_one(m.value())
        return isinstance(decoded, dict) and decoded["model_version"] == version

    return any(
        by_version(m) for m in p.read_topic(p.settings.topics.predictions, 1, 1.0, by_version)
    )


def _tamper(p: Pipeline, version: str) -> None:
    """Change one leaf of a registered version's stored model, as an attacker or a bad disk."""
    source = MlflowRegistry(p.settings).client.get_model_version(p.settings.model.name, version)
    model_txt = Path(urlparse(str(source.source)).path) / "model.txt"
    text = model_txt.read_text()
    model_txt.write_text(text.replace("leaf_value=", "leaf_value=7", 1))


def test_promote_during_a_live_stream_scores_each_event_once_and_in_order(
    pipeline: Pipeline,
) -> None:
    # Polling is slowed to an hour, longer than any deadline below, so only the model event can
    # explain a swap during this test.
    poll = 3600.0
    p = with_model(pipeline, pipeline.settings.model.name, poll_seconds=poll)
    # A pool: the stream goes on until v2 has been served, however long the promotion takes on
    # a slow machine; only the events sent are checked.
    pool = world_events(p, 30_000, start=100_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    worker_started = time.time()
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "--json", "worker", "scoring", "--timeout", "6"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _send(p, pool[:1000])
        deadline = time.monotonic() + 120
        while not p.read("Prediction", 1, timeout=1):
            assert time.monotonic() < deadline and worker.poll() is None, "worker never scored"
        # A steady stream with the promotion in the middle of it.
        promoting: list[float] = []
        promoted: list[Ran] = []

        def promote_midway() -> None:
            wait_for(lambda: len(p.read("Prediction", 3000, timeout=0.5)) >= 3000, 120, "3,000")
            promoting.append(time.time())
            promoted.append(_cli(p, "models", "promote", "2", "-m", "live promotion test"))

        promoter = threading.Thread(target=promote_midway)
        promoter.start()
        sent, served_by_v2 = 1000, False
        deadline = time.monotonic() + 240
        while not served_by_v2:
            assert time.monotonic() < deadline, "v2 was never served"
            assert worker.poll() is None, "the worker exited before serving v2"
            assert sent < len(pool), "the pool ran out before v2 was served"
            _send(p, pool[sent : sent + 300])
            sent += 300
            time.sleep(0.2)  # pacing the stream (about 1,500/s), not synchronisation
            served_by_v2 = bool(promoted) and _served_by(p, "2")
        # And more after the switch, so each partition goes on past it.
        for _ in range(5):
            _send(p, pool[sent : sent + 300])
            sent += 300
            time.sleep(0.2)
        promoter.join()
        assert promoted[0].returncode == 0, promoted[0].stderr
        events = pool[:sent]
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()

    predictions = _predictions(p, len(events))
    ids = [pr["event_id"] for _, _, pr in predictions]
    assert len(ids) == len(set(ids)) == len(events)  # none lost, none scored twice
    assert set(ids) == {e["event_id"] for e in events}
    versions = {pr["model_version"] for _, _, pr in predictions}
    assert versions == {"1", "2"}, versions
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for partition, offset, pr in predictions:
        by_partition[partition].append((offset, pr["model_version"]))
    for partition, rows in by_partition.items():
        seq = [v for _, v in sorted(rows)]
        # All v1 first, then all v2: the switch happens once, between batches.
        assert seq == sorted(seq, key=int), f"partition {partition} switched back and forth"
    # Learned from the event: served after the promotion began and before any poll was due.
    first_v2 = min(pr["scored_at"] for _, _, pr in predictions if pr["model_version"] == "2")
    assert promoting[0] <= first_v2 / 1000 < worker_started + poll
    assert '"swaps": 1' in out.decode()


def test_a_tampered_version_is_refused_and_scoring_continues(pipeline: Pipeline) -> None:
    p = with_model(pipeline, pipeline.settings.model.name, poll_seconds=0.5)
    _tamper(p, "2")
    # Through our CLI the promotion is refused before anything changes...
    refused = _cli(p, "models", "promote", "2", "-m", "should be refused")
    assert refused.returncode != 0 and "sha256" in refused.stderr
    registry = MlflowRegistry(p.settings)
    assert registry.rollout_state().champion == "1"
    failures = metrics.MODEL_LOAD_FAILURES.labels(reason="integrity")
    before = failures._value.get()

    # ...but someone moves the alias in MLflow directly (UI, API): workers find it by polling.
    worker = scoring_worker(p.settings)
    events = world_events(p, 2000, start=110_000)
    _send(p, events[:1000])
    summary: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: summary.update(worker.run(max_events=2000, idle_timeout=30).to_dict())
    )
    thread.start()
    wait_for(lambda: worker.summary.consumed >= 1000, 60, "the first 1,000 scored")
    state, change = plan_promote(registry.rollout_state(), "2", "manual", "someone", 0)
    registry.apply(state, change)
    watcher = worker.watcher
    assert watcher is not None
    reads = watcher.reads
    # Several polls: the refusal must not be retried (or logged) on each.
    wait_for(lambda: watcher.reads >= reads + 4, 30, "four registry polls")
    _send(p, events[1000:])
    thread.join(timeout=120)
    assert summary["predictions"] == 2000 and summary["swaps"] == 0
    predictions = _predictions(p, 2000)
    assert {pr["model_version"] for _, _, pr in predictions} == {"1"}
    assert not any(pr["degraded"] for _, _, pr in predictions)
    assert failures._value.get() == before + 1
    assert metrics.MODEL_LOAD_REFUSED._value.get() == 1

    # A worker starting now, with the tampered v2 as champion, serves the last good one.
    fallbacks = metrics.FALLBACKS.labels(reason="model_load")
    fb_before = fallbacks._value.get()
    restarted = scoring_worker(p.settings)
    assert restarted.serving.champion.version == "1"
    assert fallbacks._value.get() == fb_before + 1
    # And `models verify` says which version is broken.
    verify = _cli(p, "--json", "models", "verify")
    assert verify.returncode == 1 and '"ok": false' in verify.stdout


def test_shadow_then_canary_then_rollback(pipeline: Pipeline) -> None:
    p = with_model(pipeline, pipeline.settings.model.name, watch=False)
    assert _cli(p, "models", "shadow", "2", "-m", "compare first").returncode == 0
    events = world_events(p, 1500, start=120_000)
    _send(p, events)
    summary = scoring_worker(p.settings).run(max_events=len(events), idle_timeout=30)
    assert summary.predictions == summary.shadow_predictions == len(events)
    served = _predictions(p, len(events))
    shadow = _read_shadow(p, len(events))
    assert {(pr["model_version"], pr["variant"]) for _, _, pr in served} == {("1", "champion")}
    assert {(pr["model_version"], pr["variant"]) for pr in shadow} == {("2", "shadow")}
    assert {pr["event_id"] for pr in shadow} == {e["event_id"] for e in events}
    report = _cli(p, "--json", "models", "compare")
    assert report.returncode == 0, report.stderr
    (agreed,) = json.loads(report.stdout)["shadow_agreement"]
    assert agreed["shadow_version"] == "2" and agreed["n"] == len(events)
    assert 0 < agreed["mean_abs_diff"] < 0.2 and agreed["rank_correlation"] > 0.5

    # Canary at 10%: each user's events all go to one variant, the one its hash says.
    assert _cli(p, "models", "canary", "2", "--percent", "10", "-m", "canary").returncode == 0
    more = world_events(p, 3000, start=130_000)
    _send(p, more)
    scoring_worker(p.settings).run(max_events=len(more), idle_timeout=30)
    canary_ids = {e["event_id"] for e in more}
    rows = [
        pr for _, _, pr in _predictions(p, len(events) + len(more)) if pr["event_id"] in canary_ids
    ]
    assert len(rows) == len(more)
    variant_of: dict[str, set[str]] = defaultdict(set)
    for pr in rows:
        variant_of[pr["user_id"]].add(pr["variant"])
    assert all(len(v) == 1 for v in variant_of.values())
    users = sorted(variant_of)
    expected = dict(zip(users, in_canary(users, 10.0), strict=True))
    assert all((variant_of[u] == {"challenger"}) == expected[u] for u in users)
    assert {pr["model_version"] for pr in rows if pr["variant"] == "challenger"} == {"2"}
    assert any(expected.values()) and not all(expected.values())

    # Rollback during a canary stops it; a second one has no earlier champion to go to.
    back = _cli(p, "--json", "models", "rollback", "-m", "canary looks off")
    assert back.returncode == 0, back.stderr
    assert MlflowRegistry(p.settings).rollout_state().mode == "none"
    promote = _cli(p, "models", "promote", "2", "-m", "after all")
    assert promote.returncode == 0
    back = _cli(p, "models", "rollback", "-m", "v2 bad")
    assert back.returncode == 0 and MlflowRegistry(p.settings).rollout_state().champion == "1"
    history = MlflowRegistry(p.settings).history()
    assert [h.event_type for h in history] == [
        "shadow_started",
        "canary_started",
        "rolled_back",
        "promoted",
        "rolled_back",
    ]
    assert all(h.actor and h.reason for h in history)


def _read_shadow(p: Pipeline, n: int) -> list[dict[str, Any]]:
    settings: Settings = p.settings
    shadow_settings = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(
                update={"predictions": settings.topics.shadow_predictions}
            )
        }
    )
    reader = Pipeline(shadow_settings, p.world, p.trained, p.missing_users)
    return [pr for _, _, pr in _predictions(reader, n)]
