"""The everyday ops commands against a real broker: `streamscore tail` decodes what producers
sent (hand-made events: their fields are the oracle)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def _cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    topic = pipeline.settings.topics.interactions
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
