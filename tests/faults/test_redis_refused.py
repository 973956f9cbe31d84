"""Redis refusing a running worker's user, on a real redis-server with ACL users: a command
taken away (NOPERM) and a password changed (WRONGPASS). Neither is an outage: the worker holds
its input (nothing degraded, nothing committed past what was scored), readiness fails at once,
and after ``redis.auth_failure_seconds`` it stops with one line naming the user, the command
and the keys, never the password. Given the grant back, a new worker loses nothing."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from services.core import metrics
from services.core.errors import RedisRefused
from services.core.settings import Settings
from services.redisconn import acl
from streams.adapters import feature_spec
from streams.api import create_app
from streams.api_keys import ApiKeys
from streams.runtime import scoring_worker, worker_probes
from tests.faults.harness import (
    InProcessWorker,
    OwnRedis,
    WorkerProcess,
    good_items,
    outputs_count,
    send,
    wait_accounted,
    wait_for,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import (
    Pipeline,
    cli_in_process,
    make_pipeline,
    world_events,
)
from tests.integration.test_api import Server, call

pytestmark = [pytest.mark.integration]
USER = acl.user("worker")
REFUSED_SECONDS = 5.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    yield server
    server.close()


def _setup(stack: Stack, tmp_path: Path, own: OwnRedis) -> tuple[Pipeline, redis.Redis, str]:
    """A pipeline whose features the default user loads into ``own``, and the worker's ACL user
    there (the rules of `local up --cluster`); returns the pipeline, an admin client and the
    worker's password."""
    base = stack.settings.redis.model_dump()
    p = next(
        make_pipeline(
            stack,
            tmp_path,
            redis={**base, "url": own.url},
            worker={"scoring_group": f"g-{tmp_path.name}", "liveness_seconds": 3.0},
        )
    )
    admin = redis.Redis.from_url(own.url)
    password = secrets.token_hex(16)
    rules = acl.rules("worker", p.settings.redis.key_prefix).split()
    admin.execute_command("ACL", "SETUSER", USER, "reset", "on", f">{password}", *rules)
    return p, admin, password


def _as_worker(p: Pipeline, password: str) -> Settings:
    redis_cfg = p.settings.redis.model_copy(
        update={
            "username": USER,
            "password": SecretStr(password),
            "auth_failure_seconds": REFUSED_SECONDS,
        }
    )
    return p.settings.model_copy(update={"redis": redis_cfg})


def _refusals(cause: str, command: str) -> float:
    return float(metrics.REDIS_REFUSALS.labels(cause=cause, command=command)._value.get())


def test_a_command_taken_away_holds_the_input_then_stops_the_worker(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis
) -> None:
    p, admin, password = _setup(stack, tmp_path, own_redis)
    settings = _as_worker(p, password)
    before = _refusals("noperm", "MGET")
    worker = InProcessWorker(lambda: scoring_worker(settings), idle_timeout=None)
    sent = send(p, good_items(p, 200, start=0))
    wait_for(lambda: outputs_count(p) >= 200, 120, "the first 200 outputs")

    admin.execute_command("ACL", "SETUSER", USER, "-mget")  # the feature store's one command
    refused_at = time.monotonic()
    sent += send(p, good_items(p, 100, start=200))
    watch = worker.worker.refusals.watch
    wait_for(lambda: watch.problem() is not None, 60, "the refusal to be seen")
    code, body = worker_probes(settings, worker.worker).readyz()
    checks = json.loads(body)["checks"]
    assert code == 503 and "MGET" in checks["redis"], checks
    worker.thread.join(REFUSED_SECONDS + 60)
    assert not worker.thread.is_alive(), "the worker did not stop on the refusal"
    stopped_after = time.monotonic() - refused_at

    error = worker.error
    assert isinstance(error, RedisRefused), repr(error)
    line = str(error)
    assert "\n" not in line and password not in line
    assert f"refused user {USER!r} MGET on {p.settings.redis.key_prefix}feat:" in line
    assert "(NOPERM:" in line and "refused for " in line
    assert REFUSED_SECONDS <= stopped_after < REFUSED_SECONDS + 60
    assert _refusals("noperm", "MGET") > before
    # Held, not degraded: nothing of the last 100 was scored with defaults or committed.
    assert outputs_count(p) == 200

    admin.execute_command("ACL", "SETUSER", USER, "+mget")
    again = InProcessWorker(lambda: scoring_worker(settings), idle_timeout=10)
    tally = wait_accounted(p, sent, 120)
    again.stop()
    assert (tally.lost, tally.dead_lettered, tally.degraded) == (0, 0, 0), tally
    assert watch.problem() is None


def test_a_changed_password_stops_the_worker_process_with_exit_2_and_one_line(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis
) -> None:
    p, admin, password = _setup(stack, tmp_path, own_redis)
    env = {
        "STREAMSCORE_REDIS__USERNAME": USER,
        "STREAMSCORE_REDIS__PASSWORD": password,
        "STREAMSCORE_REDIS__AUTH_FAILURE_SECONDS": str(REFUSED_SECONDS),
    }
    proc = WorkerProcess(p, tmp_path, "w0", env)
    proc.wait_assigned()
    sent = send(p, good_items(p, 200, start=0))
    wait_for(lambda: outputs_count(p) >= 200, 120, "the first 200 outputs")

    # A rotation that went wrong: the user's password is replaced, and its connections are
    # dropped (as a restart or a failover drops them; a connection made before keeps its login).
    admin.execute_command("ACL", "SETUSER", USER, "resetpass", f">{secrets.token_hex(16)}")
    admin.execute_command("CLIENT", "KILL", "USER", USER)
    sent += send(p, good_items(p, 100, start=200))
    rc = proc.proc.wait(REFUSED_SECONDS + 90)
    text = proc.text()
    last = text.strip().splitlines()[-1]
    assert rc == 2, text[-3000:]
    where = f"127.0.0.1:{own_redis.port}"
    assert last.startswith(f"error: redis at {where} refused user {USER!r} "), last
    assert "(WRONGPASS: wrong password, or the user is disabled) for MGET on" in last
    assert password not in text
    assert outputs_count(p) == 200  # nothing scored without features, nothing committed

    admin.execute_command("ACL", "SETUSER", USER, "resetpass", f">{password}")
    again = WorkerProcess(p, tmp_path, "w1", env | {"STREAMSCORE_REDIS__PASSWORD": password})
    tally = wait_accounted(p, sent, 120)
    assert again.stop() == 0
    assert (tally.lost, tally.dead_lettered, tally.degraded) == (0, 0, 0), tally


@pytest.mark.kafka_only
def test_the_api_and_a_command_answer_a_refusal_as_no_outage(
    stack: Stack, tmp_path: Path, own_redis: OwnRedis
) -> None:
    """The API answers 500 without Retry-After (a 503 would have clients retry for ever), the
    body names the user and the command; /readyz fails; `features get` exits 2 with one line."""
    p, admin, _ = _setup(stack, tmp_path, own_redis)
    prefix = p.settings.redis.key_prefix
    api_password = secrets.token_hex(16)
    rules = acl.rules("api", prefix).split()
    api_user = acl.user("api")
    admin.execute_command("ACL", "SETUSER", api_user, "reset", "on", f">{api_password}", *rules)
    _, token = ApiKeys(admin, prefix).create("tests")
    cfg = p.settings.redis.model_copy(
        update={"username": api_user, "password": SecretStr(api_password)}
    )
    settings = p.settings.model_copy(update={"redis": cfg})
    body = {"events": world_events(p, 2, start=0)}
    server = Server(create_app(settings))
    try:
        predict = f"{server.url}/v1/predict"
        code, _, got = call(predict, body, token)
        assert code == 200, got

        admin.execute_command("ACL", "SETUSER", api_user, "-mget")
        code, headers, got = call(predict, body, token)
        assert code == 500 and "Retry-After" not in headers, (code, headers, got)
        assert f"refused user {api_user!r} MGET on {prefix}feat:" in got["detail"], got
        code, _, ready = call(f"{server.url}/readyz", method="GET")
        assert code == 503 and any("MGET" in x for x in ready["problems"]), ready

        admin.execute_command("ACL", "SETUSER", api_user, "-hgetall")  # the key store's read
        code, headers, got = call(f"{server.url}/v1/events", body, token)
        assert code == 500 and "Retry-After" not in headers, (code, headers, got)
        assert f"HGETALL on {prefix}apikey:*" in got["detail"], got
        assert api_password not in json.dumps(got)
    finally:
        server.stop()

    # A command reading Redis as a user whose grant was taken away: exit 2, one line.
    cli_password = secrets.token_hex(16)
    cli_user = acl.user("cli")
    cli_rules = acl.rules("cli", prefix).split()
    admin.execute_command("ACL", "SETUSER", cli_user, "reset", "on", f">{cli_password}", *cli_rules)
    admin.execute_command("ACL", "SETUSER", cli_user, "-mget")
    cli_cfg = p.settings.redis.model_copy(
        update={"username": cli_user, "password": SecretStr(cli_password)}
    )
    as_cli = Pipeline(
        p.settings.model_copy(update={"redis": cli_cfg}), p.world, p.trained, p.missing_users
    )
    group = feature_spec(p.settings).groups[0].name
    ran = cli_in_process(as_cli, "features", "get", group, "u-000001")
    assert ran.returncode == 2, ran
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: redis at "), ran.stderr
    assert f"refused user {cli_user!r} MGET on {prefix}feat:" in lines[0]
    assert cli_password not in ran.stderr + ran.stdout
