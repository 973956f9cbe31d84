"""The everyday ops commands against a real broker: `streamscore tail` decodes what producers
sent (hand-made events: their fields are the oracle)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, run_cli, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def _cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(p.settings, *args)


def test_tail_decodes_filters_and_prints_raw(pipeline: Pipeline) -> None:
    events = world_events(pipeline, 6)
    codec = pipeline.codec("Interaction")
    pipeline.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
        + [(b"junk", b"not avro", [])]
    )
    topic = pipeline.settings.topics.events
    out = _cli(pipeline, "tail", topic, "-n", "100", "--from-beginning")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    decoded = [r["value"] for r in rows if r["value"] is not None]
    assert sorted(v["event_id"] for v in decoded) == sorted(e["event_id"] for e in events)
    assert [r["undecodable"].split(":")[0] for r in rows if r["value"] is None] == [
        "bad_magic_byte"
    ]

    wanted = events[2]
    out = _cli(
        pipeline,
        "tail",
        topic,
        "-n",
        "100",
        "--from-beginning",
        "--where",
        f"event_id={wanted['event_id']}",
    )
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["value"]["position"] == wanted["position"] and row["key"] == wanted["user_id"]

    out = _cli(pipeline, "tail", topic, "-n", "1", "--raw", "--key", "junk")
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    assert bytes.fromhex(row["value_hex"]) == b"not avro"

    out = _cli(pipeline, "tail", "no.such.topic.v1")
    assert out.returncode == 2 and "not in the topic table" in out.stderr


def test_produce_validates_then_sends(pipeline: Pipeline, tmp_path: Path) -> None:
    topic = pipeline.settings.topics.events
    out = _cli(pipeline, "--json", "produce", topic, "--example")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"topic": topic, "sent": 1}
    good, bad = world_events(pipeline, 2)
    bad["position"] = -5  # the rules: position >= 0
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    out = _cli(pipeline, "produce", topic, "--value", f"@{batch}")
    assert out.returncode == 2 and "value 2: out_of_range: position=-5" in out.stderr, out.stderr
    out = _cli(pipeline, "produce", topic, "--value", '{"event_id": "x"}')
    assert out.returncode == 2 and "does not match Interaction" in out.stderr, out.stderr
    batch.write_text(json.dumps(good) + "\n")
    assert _cli(pipeline, "produce", topic, "--value", f"@{batch}").returncode == 0
    rows = [json.loads(x) for x in _cli(pipeline, "tail", topic, "-n", "10").stdout.splitlines()]
    assert [r["value"]["event_id"] for r in rows][-1] == good["event_id"]  # only the valid ones
    assert len(rows) == 2 and rows[-1]["key"] == good["user_id"]
    # --key-field, and --unchecked: what the checks refuse goes out (as JSON text when the
    # schema refuses it), labelled as a test on stderr.
    batch.write_text(json.dumps(bad) + "\n" + json.dumps({"event_id": "not-avro"}) + "\n")
    args = ("--json", "produce", topic, "--value", f"@{batch}", "--key-field", "event_id")
    out = _cli(pipeline, *args, "--unchecked")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"topic": topic, "sent": 2, "unchecked": True, "not_avro": 1}
    assert "UNCHECKED (for testing)" in out.stderr
    tailed = _cli(pipeline, "tail", topic, "-n", "2").stdout.splitlines()
    by_key = {r["key"]: r for r in map(json.loads, tailed)}
    assert sorted(by_key) == sorted([bad["event_id"], "not-avro"])
    assert by_key[bad["event_id"]]["value"]["position"] == -5
    assert by_key["not-avro"]["value"] is None
    assert by_key["not-avro"]["undecodable"].startswith("bad_magic_byte")


def test_features_get_shows_stored_values_or_the_defaults(pipeline: Pipeline) -> None:
    import numpy as np

    keys, rows = pipeline.world.features("user")
    stored = next(i for i, k in enumerate(keys) if k not in pipeline.missing_users)
    out = _cli(pipeline, "--json", "features", "get", "user", keys[stored])
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["found"] is True
    assert np.allclose(list(got["features"].values()), rows[stored].astype(float))
    out = _cli(pipeline, "--json", "features", "get", "user", "u-nobody")
    assert out.returncode == 3 and json.loads(out.stdout)["found"] is False
    out = _cli(pipeline, "features", "get", "planet", "x")
    assert out.returncode == 2 and "the spec's groups are" in out.stderr
