"""Redis refusing the control plane's user, on a real redis-server with its ACL user: the
label join's read of the prediction store taken away (NOPERM), in process and under
`streamscore worker control-plane`. As for the worker: readiness
fails at once, the refusal is one line without a traceback (not one per try), the label batch
is tried again rather than given up, and once the refusal has lasted
``redis.auth_failure_seconds`` the stop is called with one line naming the server, the user,
the command and the key pattern. Given the grant back, the batch goes through."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from confluent_kafka import Producer
from pydantic import SecretStr

from services.core.errors import RedisRefused
from services.core.settings import Settings
from services.kafka.config import producer_config
from services.redisconn import acl
from services.redisconn.refusal import WATCH, watch_refusals
from streams.adapters import prediction_store
from streams.control.app import retrying
from streams.runtime import control_plane_probes
from tests.faults.harness import OwnRedis, wait_for
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline, start_control_plane

pytestmark = [pytest.mark.integration]
USER = acl.user("control")
REFUSED_SECONDS = 2.0  # the shortest that still shows a run of tries before the stop


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    # The watch is one per process: refusals an earlier test left in it (under 60 s old) would
    # make this one's control plane not ready from its start (seen in `make faults`).
    WATCH.reset()
    server = OwnRedis(tmp_path / "redis")
    yield server
    server.close()
    WATCH.reset()


def _as_control(own: OwnRedis, password: str) -> Settings:
    base = Settings()
    cfg = base.redis.model_copy(
        update={
            "url": own.url,
            "username": USER,
            "password": SecretStr(password),
            "auth_failure_seconds": REFUSED_SECONDS,
        }
    )
    return base.model_copy(update={"redis": cfg})


def test_a_refused_label_join_fails_readiness_logs_one_line_and_stops_the_control_plane(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    password = secrets.token_hex(16)
    settings = _as_control(own_redis, password)
    prefix = settings.redis.key_prefix
    rules = acl.rules("control", prefix).split()
    admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{password}", *rules)
    store = prediction_store(settings)
    state = SimpleNamespace(
        last_tick=time.monotonic(),
        registry=SimpleNamespace(rollout_state=lambda: SimpleNamespace(champion="1")),
    )
    probes = control_plane_probes(settings, state)
    probes.cache_seconds = 0.0

    def join() -> object:
        return asyncio.run(retrying("label_join", "labels p0@0-9", store.get_many, "served", ["e"]))

    assert join() == [None]  # granted: the join reads the store
    assert probes.readyz()[0] == 200

    stops: list[RedisRefused] = []
    stopped = threading.Event()

    def stop(refused: RedisRefused) -> None:
        stops.append(refused)
        stopped.set()

    admin.execute_command("ACL", "SETUSER", USER, "-mget")  # the label join's one command
    refused_at = time.monotonic()
    done = watch_refusals(REFUSED_SECONDS, stop, every=0.2)
    results: list[object] = []
    with caplog.at_level(logging.INFO):
        joiner = threading.Thread(target=lambda: results.append(join()), daemon=True)
        joiner.start()
        wait_for(lambda: WATCH.problem() is not None, 30, "the refusal to be seen")
        code, body = probes.readyz()
        checks = json.loads(body)["checks"]
        assert code == 503 and "MGET" in checks["redis"], checks

        assert stopped.wait(REFUSED_SECONDS + 30), "the refusal never stopped the control plane"
        stopped_after = time.monotonic() - refused_at
        line = str(stops[0])
        assert "\n" not in line and password not in line
        where = f"127.0.0.1:{own_redis.port}"
        assert line.startswith(f"redis at {where} refused user {USER!r} MGET on {prefix}pred:")
        assert "(NOPERM:" in line and "refused for " in line
        assert REFUSED_SECONDS <= stopped_after < REFUSED_SECONDS + 30
        assert joiner.is_alive() and results == []  # the batch is not given up

        admin.execute_command("ACL", "SETUSER", USER, "+mget")
        joiner.join(30)
    done.set()
    assert results == [[None]]  # the same batch, once granted again
    assert WATCH.problem() is None and probes.readyz()[0] == 200

    mine = [r for r in caplog.records if r.name == "streams.control.app"]
    assert all(r.exc_info is None for r in mine), [r.getMessage() for r in mine]
    refusals = [r for r in mine if "refused user" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in mine]  # tried about each second
    assert password not in caplog.text


@pytest.mark.kafka_only  # faust (aiokafka), as tests/integration/test_control_plane.py
def test_a_refused_label_join_stops_the_control_plane_process_with_exit_2_and_one_line(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis
) -> None:
    base = stack.settings.redis.model_dump()
    p = next(make_pipeline(stack, tmp_path, redis={**base, "url": own_redis.url}))
    prefix = p.settings.redis.key_prefix
    admin = redis.Redis.from_url(own_redis.url)
    password = secrets.token_hex(16)
    rules = acl.rules("control", prefix).split()
    admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{password}", *rules)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    env |= {
        "STREAMSCORE_REDIS__USERNAME": USER,
        "STREAMSCORE_REDIS__PASSWORD": password,
        "STREAMSCORE_REDIS__AUTH_FAILURE_SECONDS": str(REFUSED_SECONDS),
    }
    control, lines, reader = start_control_plane(env)
    try:
        # Its group starts at the latest offsets: the label goes once it owns the partitions.
        wait_for(
            lambda: (
                control.poll() is not None
                or any("Setting newly assigned partitions" in line for line in lines)
            ),
            120,
            "the control plane's partitions",
        )
        assert control.poll() is None, "".join(lines)[-3000:]
        admin.execute_command("ACL", "SETUSER", USER, "-mget")  # the label join's one command
        raw = p.world.events(1, start_index=0)
        (label,) = p.world.labels(raw)
        label |= {"label_time": label["event_time"] + 500}
        producer = Producer(producer_config(p.settings))
        producer.produce(
            p.settings.topics.labels,
            key=label["event_id"].encode(),
            value=p.codec(p.settings.topics.label_record).encode_one(label),
        )
        assert producer.flush(30) == 0
        rc = control.wait(REFUSED_SECONDS + 60)
    finally:
        if control.poll() is None:
            control.kill()
            control.wait(30)
        reader.join(30)  # to the end of its stderr
        assert control.stderr is not None
        control.stderr.close()
    text = "".join(lines)
    assert rc == 2, text[-3000:]
    last = text.strip().splitlines()[-1]
    where = f"127.0.0.1:{own_redis.port}"
    assert last.startswith(
        f"error: redis at {where} refused user {USER!r} MGET on {prefix}pred:served:* (NOPERM:"
    ), last
    assert "refused for " in last
    assert "Traceback" not in text and password not in text, text[-3000:]
    logged = [line for line in text.splitlines() if "label_join: redis at " in line]
    assert len(logged) == 1, logged  # tried each second, logged once
