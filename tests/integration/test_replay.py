"""`streamscore replay` against a real broker and registry: a window re-scored with version 1
after version 2 became champion reproduces version 1's original predictions exactly (the
oracle: what the worker served at the time), the diff against version 2 shows the change, a
dry run writes nothing, and a replay killed mid-way and run again ends with each event in the
sandbox exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from services.kafka.config import consumer_config, producer_config
from streams.replay import group_of
from streams.topics import sandbox_topic
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import (
    Pipeline,
    committed_total,
    make_pipeline,
    with_two_versions,
    world_events,
)
from tests.integration.pipeline_env import cli_in_process as _cli
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


@pytest.fixture(scope="module")
def served(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Events scored by v1 (champion), then, after `models promote 2`, more events by v2."""
    tmp = tmp_path_factory.mktemp("replay")
    for base in make_pipeline(stack, tmp, batch={"max_messages": 200, "timeout_seconds": 0.05}):
        p = with_two_versions(base, f"replay-{uuid.uuid4().hex[:8]}")
        first = world_events(p, 600, start=300_000)
        second = world_events(p, 300, start=301_000)
        t0 = int(time.time() * 1000) - 1
        _send(p, first)
        _score(p)
        mid = int(time.time() * 1000) + 1
        wait_for(lambda m=mid: time.time() * 1000 > m + 1, 5, "the clock to pass mid")
        assert _cli(p, "models", "promote", "2", "-m", "replay test").returncode == 0
        _send(p, second)
        _score(p)
        original = _records(p, p.settings.topics.predictions)
        assert len(original) == len(first) + len(second)
        yield {"p": p, "first": first, "second": second, "t0": t0, "mid": mid, "orig": original}


def _send(p: Pipeline, events: list[dict[str, Any]]) -> None:
    codec = p.codec("Interaction")
    p.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )


def _score(p: Pipeline) -> None:
    """A worker run that stops once the input has been idle (everything sent is scored)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    ran = subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", "worker", "scoring", "--timeout", "4"],
        env=env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]


def _records(p: Pipeline, topic: str) -> dict[str, dict[str, Any]]:
    """Every prediction on ``topic`` by event id; fails on a duplicate."""
    codec = p.codec("Prediction")
    consumer = Consumer(consumer_config(p.settings, f"check-{uuid.uuid4().hex[:8]}"))
    out: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for q in meta.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, q), timeout=10)
            ends[q] = high
        consumer.assign([TopicPartition(topic, q, 0) for q in ends])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.3)
            for m in batch:
                if m.error() is None:
                    rec = codec.decode_one(m.value())
                    assert isinstance(rec, dict)
                    assert rec["event_id"] not in out, f"{rec['event_id']} twice on {topic}"
                    out[rec["event_id"]] = rec
            at = consumer.position([TopicPartition(topic, q) for q in ends])
            if all(tp.offset >= ends[tp.partition] for tp in at):
                break
    finally:
        consumer.close()
    return out


def _log_ends(p: Pipeline, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(p.settings, "probe"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            q: consumer.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1]
            for q in parts
        }
    finally:
        consumer.close()


def _topics(p: Pipeline) -> set[str]:
    consumer = Consumer(consumer_config(p.settings, "probe"))
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


def _window(s: dict[str, Any]) -> list[str]:
    return ["--from-time", str(s["t0"]), "--to-time", str(s["mid"])]


def test_rescoring_with_v1_after_v2_became_champion_reproduces_v1_exactly(
    served: dict[str, Any],
) -> None:
    p, first = served["p"], served["first"]
    original = served["orig"]
    assert {original[e["event_id"]]["model_version"] for e in first} == {"1"}
    ran = _cli(
        p,
        "--json",
        "replay",
        *_window(served),
        "--model",
        "1",
        "--sandbox",
        "v1-again",
        "--execute",
        "--rate",
        "0",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout)
    assert summary["outcome"]["read"] == len(first)
    assert summary["outcome"]["predictions"] == len(first)
    assert summary["outcome"]["dead_letters"] == 0
    replayed = _records(p, sandbox_topic("v1-again"))
    assert set(replayed) == {e["event_id"] for e in first}
    for event_id, rec in replayed.items():
        assert rec["model_version"] == "1"
        assert rec["score"] == original[event_id]["score"], event_id  # bit for bit
        assert rec["prediction_id"] == original[event_id]["prediction_id"]

    # The diff against the original predictions: nothing changed.
    same = _cli(p, "--json", "replay", "diff", "v1-again")
    assert same.returncode == 0, same.stderr[-2000:]
    report = json.loads(same.stdout)
    assert (report["matched"], report["changed"], report["only_in_other"]) == (len(first), 0, 0)

    # The same window with v2: the diff shows what v2 changes, per version pair.
    ran = _cli(
        p,
        "replay",
        *_window(served),
        "--model",
        "2",
        "--sandbox",
        "v2-window",
        "--execute",
        "--rate",
        "0",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    v2 = _records(p, sandbox_topic("v2-window"))
    expected_changed = sum(
        1 for e, rec in v2.items() if abs(rec["score"] - original[e]["score"]) > 1e-12
    )
    assert expected_changed > 0
    png = Path(os.environ.get("TMPDIR", "/tmp")) / f"diff-{uuid.uuid4().hex[:6]}.png"
    out = _cli(p, "--json", "replay", "diff", "v2-window", "--png", str(png))
    report = json.loads(out.stdout)
    assert report["changed"] == expected_changed
    assert report["by_version"][0]["base_version"] == "1"
    assert report["by_version"][0]["other_version"] == "2"
    flips = sum((rec["score"] >= 0.5) != (original[e]["score"] >= 0.5) for e, rec in v2.items())
    assert report["flips_up"] + report["flips_down"] == flips
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = _cli(p, "replay", "diff", "v2-window", "--base", "v1-again")
    assert md.returncode == 0 and md.stdout.startswith("# Replay diff")
    assert f"- changed: {expected_changed} " in md.stdout


def test_a_dry_run_writes_nothing(served: dict[str, Any]) -> None:
    p = served["p"]
    before = _topics(p)
    args = [*_window(served), "--model", "champion", "--sandbox", "dry"]
    ran = _cli(p, "--json", "replay", *args)
    assert ran.returncode == 0, ran.stderr[-2000:]
    plan = json.loads(ran.stdout)
    assert plan["executed"] is False and plan["left"] == len(served["first"])
    assert plan["model_version"] == "2"
    assert sum(r["offsets"] for r in plan["ranges"]) == len(served["first"])
    assert _topics(p) == before  # no sandbox topic
    assert committed_total(p, group_of(plan["run_id"])) == 0  # no offsets
    assert not (p.settings.home / "replays" / f"{plan['run_id']}.json").exists()


def test_copy_refuses_a_production_target_without_allow_production(
    served: dict[str, Any],
) -> None:
    p = served["p"]
    target = p.settings.topics.labels
    before = _log_ends(p, target)
    refused = _cli(p, "replay", *_window(served), "--to", target, "--execute")
    assert refused.returncode == 2 and "--allow-production" in refused.stderr
    assert _log_ends(p, target) == before


def test_an_interrupted_replay_resumes_and_writes_each_event_once(
    served: dict[str, Any],
) -> None:
    p, first = served["p"], served["first"]
    args = [
        "replay",
        *_window(served),
        "--model",
        "1",
        "--sandbox",
        "killed",
        "--execute",
        "--rate",
        "150",
        "--batch",
        "20",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    dry = json.loads(_cli(p, "--json", *args[:-5]).stdout)
    group = group_of(dry["run_id"])
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: committed_total(p, group) >= 100 or proc.poll() is not None, 120, "progress"
        )
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    part = committed_total(p, group)
    assert 0 < part < len(first)
    again = _cli(p, "--json", *args[:-4], "--rate", "0")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["outcome"]["read"] == len(first) - part
    assert summary["left"] == 0
    replayed = _records(p, sandbox_topic("killed"))  # read_committed; fails on a duplicate
    assert set(replayed) == {e["event_id"] for e in first}
    done = _cli(p, "--json", *args[:-4])
    assert json.loads(done.stdout)["outcome"]["read"] == 0  # complete: nothing more


def test_predictions_get_finds_what_was_served_and_explains_it_now(
    served: dict[str, Any],
) -> None:
    p, first = served["p"], served["first"]
    event = first[7]
    original = served["orig"][event["event_id"]]
    got = _cli(p, "--json", "predictions", "get", event["event_id"])
    assert got.returncode == 0, got.stderr[-2000:]
    row = json.loads(got.stdout)
    assert row["source"] == "prediction store"
    assert (row["score"], row["model_version"], row["variant"]) == (
        original["score"],
        original["model_version"],
        original["variant"],
    )
    assert row["missing_features"] == original["missing_features"]
    explained = json.loads(
        _cli(p, "--json", "predictions", "get", event["event_id"], "--explain").stdout
    )
    assert explained["source"].startswith(p.settings.topics.predictions)
    assert explained["user_id"] == event["user_id"]
    now = explained["now"]
    assert now["event"]["event_id"] == event["event_id"]
    user = now["groups"]["user"]
    assert user["key"] == event["user_id"]
    assert user["found"] == (event["user_id"] not in p.missing_users)
    missing = _cli(p, "predictions", "get", "no-such-event", "--since", "10m")
    assert missing.returncode == 3 and "no prediction for event no-such-event" in missing.stderr


def test_tail_follow_prints_new_messages(served: dict[str, Any]) -> None:
    p = served["p"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    topic = p.settings.topics.events
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", "tail", topic, "-n", "1", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first_line = json.loads(proc.stdout.readline())  # the newest one, then it follows
        assert first_line["topic"] == topic
        new = world_events(p, 1, start=302_000)
        _send(p, new)
        line = json.loads(proc.stdout.readline())
        assert line["value"]["event_id"] == new[0]["event_id"]
    finally:
        proc.kill()
        proc.communicate()


def test_a_run_killed_inside_a_batch_is_fenced_and_the_replay_completes(
    served: dict[str, Any],
) -> None:
    """A killed run can leave a transaction open (outputs and offsets written, not committed):
    the next run fences it, and its offsets do not count."""
    p, first = served["p"], served["first"]
    args = ["replay", *_window(served), "--model", "1", "--sandbox", "zombie"]
    rid = json.loads(_cli(p, "--json", *args).stdout)["run_id"]
    topic = p.settings.topics.events
    zombie = Producer(producer_config(p.settings, **{"transactional.id": group_of(rid)}))
    zombie.init_transactions(30)
    zombie.begin_transaction()
    member = Consumer(consumer_config(p.settings, group_of(rid)))
    try:
        parts = member.list_topics(topic, timeout=10).topics[topic].partitions
        zombie.send_offsets_to_transaction(
            [TopicPartition(topic, q, 1) for q in parts], member.consumer_group_metadata(), 30
        )
        # Left open, as by a process killed between writing a batch and committing it.
        ran = _cli(p, "--json", *args, "--execute", "--rate", "0")
    finally:
        member.close()
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout)["outcome"]["read"] == len(first)
    assert set(_records(p, sandbox_topic("zombie"))) == {e["event_id"] for e in first}
