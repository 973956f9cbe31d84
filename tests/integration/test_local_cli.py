"""`streamscore local up | status | down` as a person runs it: a subprocess per command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer

from services.core.settings import TopicSettings
from services.embedded.process import start_ticks
from streams.topics import topic_table
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration]


def _cli(
    home: Path,
    ports: dict[str, int],
    *args: str,
    check: bool = True,
    pasted: dict[str, str] | None = None,
) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= {
        "STREAMSCORE_HOME": str(home),
        "STREAMSCORE_LOCAL__KAFKA_PORT": str(ports["kafka"]),
        "STREAMSCORE_LOCAL__KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "STREAMSCORE_LOCAL__REDIS_PORT": str(ports["redis"]),
    } | (pasted or {})
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout) if done.stdout.strip() else None, done.returncode


def _alive(pid: int) -> bool:
    return start_ticks(pid) is not None


def _produce_and_read(bootstrap: str, topic: str, value: bytes) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    return _read(bootstrap, topic)


def _read(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cli-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    while not out and time.monotonic() < deadline:
        out = [m.value() for m in consumer.consume(10, 0.5) if m.error() is None]
    consumer.close()
    return out


@pytest.mark.smoke
def test_up_twice_status_down(broker_kind: str, tmp_path: Path) -> None:
    if broker_kind == "external":
        pytest.skip("tests the embedded stack")
    ports = {"kafka": free_port(), "controller": free_port(), "redis": free_port()}
    try:
        first, _ = _cli(tmp_path, ports, "local", "up", "--broker", broker_kind)
        assert first["broker"] == broker_kind
        assert first["bootstrap_servers"] == f"127.0.0.1:{ports['kafka']}"
        assert first["redis_url"] == f"redis://127.0.0.1:{ports['redis']}/0"
        assert sorted(first["started"]) == ["broker", "redis"]
        expected = {t.name: t.partitions for t in topic_table(TopicSettings())}
        assert {k: first["topics"].get(k) for k in expected} == expected

        # The printed addresses work.
        payload = uuid.uuid4().bytes
        assert _produce_and_read(first["bootstrap_servers"], "feed.labels.v1", payload) == [payload]
        assert redis.Redis.from_url(first["redis_url"]).ping() is True

        second, _ = _cli(tmp_path, ports, "local", "up")
        assert second["started"] == []
        pids = {c["name"]: c["pid"] for c in first["components"]}
        assert {c["name"]: c["pid"] for c in second["components"]} == pids

        status, rc = _cli(tmp_path, ports, "local", "status")
        assert rc == 0 and status["healthy"] is True
        assert {c["name"]: c["kind"] for c in status["components"]} == {
            "broker": broker_kind,
            "redis": "redis",
        }
        # The export lines up printed, pasted: still the embedded stack, not external services.
        pasted = {
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": first["bootstrap_servers"],
            "STREAMSCORE_REDIS__URL": first["redis_url"],
        }
        status, rc = _cli(tmp_path, ports, "local", "status", pasted=pasted)
        assert rc == 0 and {c["name"]: (c["kind"], c["pid"]) for c in status["components"]} == {
            "broker": (broker_kind, pids["broker"]),
            "redis": ("redis", pids["redis"]),
        }
    finally:
        down, _ = _cli(tmp_path, ports, "local", "down", check=False)
    assert sorted(r["pid"] for r in down["stopped"]) == sorted(pids.values())
    assert [pid for pid in pids.values() if _alive(pid)] == []
    after, rc = _cli(tmp_path, ports, "local", "status", check=False)
    assert rc == 1 and after["healthy"] is False


@pytest.mark.kafka_only
def test_kafka_keeps_data_across_down_and_up(broker_kind: str, tmp_path: Path) -> None:
    """Restart durability: only Apache Kafka persists (tansu is memory-only)."""
    ports = {"kafka": free_port(), "controller": free_port(), "redis": free_port()}
    payload = uuid.uuid4().bytes
    try:
        up, _ = _cli(tmp_path, ports, "local", "up", "--broker", "kafka")
        assert _produce_and_read(up["bootstrap_servers"], "feed.labels.v1", payload) == [payload]
        _cli(tmp_path, ports, "local", "down")
        again, _ = _cli(tmp_path, ports, "local", "up", "--broker", "kafka")
        assert sorted(again["started"]) == ["broker", "redis"]
        assert _read(again["bootstrap_servers"], "feed.labels.v1") == [payload]
    finally:
        _cli(tmp_path, ports, "local", "down", check=False)
