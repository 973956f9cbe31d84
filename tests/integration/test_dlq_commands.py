"""`dlq inspect` counts what the worker refused; `dlq redrive` is a dry run unless --execute,
re-publishes originals with a redrive count, and refuses to loop a message forever."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.core.settings import to_env
from services.synthetic.hostile import hostile_values
from streams.cli import cli
from streams.runtime import scoring_worker
from streams.topics import by_record
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline, world_events

pytestmark = [pytest.mark.integration]


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def _cli(p: Pipeline, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--json", *args], env=to_env(p.settings), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _original(letter: dict[str, Any]) -> bytes:
    """The original value back from what `tail` printed."""
    value = letter["original_value"]
    if value is None:  # the empty message (empty_payload) may keep a null original
        return b""
    encoding = letter["original_value_encoding"]
    return base64.b64decode(value) if encoding == "base64" else value.encode("utf-8")


def test_inspect_and_redrive(pipeline: Pipeline, caplog: pytest.LogCaptureFixture) -> None:
    codec = pipeline.codec("Interaction")
    events = world_events(pipeline, 50)
    bad = hostile_values(codec, events[0])
    pipeline.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
        + [(b"hostile", v, [("trace", b"t-1")]) for v, _, _ in bad]
    )
    total = len(events) + len(bad)
    assert (
        scoring_worker(pipeline.settings).run(max_events=total, idle_timeout=30).consumed == total
    )

    report = _cli(pipeline, "dlq", "inspect", "--timeout", "20")
    assert report["total"] == len(bad)
    assert sum(report["by_reason"].values()) == len(bad)
    assert "value" not in report["samples"][0]  # payloads only on request
    shown = _cli(pipeline, "dlq", "inspect", "--reason", "bad_magic_byte", "--show-payloads")
    assert shown["total"] == 1 and "json-not-avro" in shown["samples"][0]["value"]

    # tail on the dead-letter topic: the originals as text or base64, never b'...' reprs; the
    # printed form gives back exactly the bytes that were sent.
    dlq = by_record(pipeline.settings.topics, "DeadLetter").name
    tailed = CliRunner().invoke(
        cli, ["tail", dlq, "-n", "100", "--from-beginning"], env=to_env(pipeline.settings)
    )
    assert tailed.exit_code == 0, tailed.output
    letters = [json.loads(line)["value"] for line in tailed.stdout.splitlines()]
    assert "b'" not in tailed.stdout
    assert sorted(_original(x) for x in letters) == sorted(v for v, _, _ in bad)
    assert {x["original_key"] for x in letters} == {"hostile"}
    for x in letters:
        assert {"key": "trace", "value": "t-1", "value_encoding": "utf-8"} in x["original_headers"]

    dry = _cli(pipeline, "dlq", "redrive", "--reason", "out_of_range", "--timeout", "20")
    assert (dry["to_send"], dry["executed"]) == (1, False)
    assert len(pipeline.read("Interaction", total + 1, timeout=3)) == total  # nothing sent

    done = _cli(
        pipeline,
        "dlq",
        "redrive",
        "--reason",
        "out_of_range",
        "--execute",
        "--max-redrives",
        "1",
        "--timeout",
        "20",
    )
    assert (done["to_send"], done["executed"]) == (1, True)
    inputs = pipeline.read("Interaction", total + 1)
    assert len(inputs) == total + 1
    redriven = [m for m in inputs if dict(m.headers() or []).get("streamscore.redrive-count")]
    assert len(redriven) == 1 and dict(redriven[0].headers())["trace"] == b"t-1"

    # It fails again (the data is still out of range): now it carries redrive_count 1 ...
    assert scoring_worker(pipeline.settings).run(max_events=1, idle_timeout=30).dead_letters == 1
    # ... and a second redrive refuses it instead of looping.
    again = _cli(
        pipeline,
        "dlq",
        "redrive",
        "--reason",
        "out_of_range",
        "--execute",
        "--max-redrives",
        "1",
        "--timeout",
        "20",
    )
    assert (again["to_send"], again["refused_redrive_limit"]) == (0, 1)
