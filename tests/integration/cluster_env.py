"""The secured cluster of `local up --cluster` for tests: three Kafka nodes (SASL_SSL, ACLs) and
the Redis Cluster (TLS, ACL users), started by the project's own code in a home of their own,
with topic names, group and key prefix of their own, so that the ACLs are made for them."""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.settings import Settings
from services.embedded import kafka_cluster
from services.embedded.stack import EmbeddedStack
from services.kafka.acls import ROLES
from streams.topics import topic_table
from tests.integration.conftest import Stack
from tests.redis_fixtures import free_base


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A base port whose three client, node and controller ports are all free."""
    rng = random.Random()  # noqa: S311 (a port, not a secret)
    for _ in range(200):
        base = rng.randrange(21000, 29000)
        if all(_free(base + off + n) for off in (0, 10, 20) for n in range(3)):
            return base
    raise RuntimeError("no free ports for the test cluster")


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (comments and blanks skipped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def as_role(settings: Settings, role: str) -> Settings:
    """``settings`` with the Kafka and Redis connection of ``role`` (from its env file, as a
    person would run it)."""
    env = read_env_file(settings.home / "cluster" / "env" / f"{role}.env")
    groups: dict[str, dict[str, Any]] = {"kafka": {}, "redis": {}}
    for key, value in env.items():
        group, _, field = key.removeprefix("STREAMSCORE_").lower().partition("__")
        if group in groups:
            groups[group][field] = value
    data = settings.model_dump()
    for group, fields in groups.items():
        data[group] = data[group] | fields
    return Settings(**data)


@dataclass(frozen=True)
class Cluster:
    """The running cluster: ``base`` settings (no credentials) and each role's password."""

    base: Settings
    passwords: dict[str, str]
    seconds: float

    def role(self, role: str) -> Settings:
        return as_role(self.base, role)

    def stack(self) -> Stack:
        """The admin's view, shaped as the session stack (for ``make_pipeline``)."""
        admin = self.role("admin")
        return Stack("kafka", admin, EmbeddedStack(self.base).status())


def start_cluster(home: Path, guarantee: str = "at_least_once") -> Iterator[Cluster]:
    """`up --cluster` with tagged names; stopped (processes only) at the end. Under
    ``guarantee="exactly_once"`` the ACLs also grant the worker its transactional ids (a
    worker may then run under either guarantee)."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        home=home,
        local={
            "cluster_port": cluster_port(),
            "redis_cluster_port": free_base(6),
            "start_timeout_seconds": 180.0,
        },
        topics={
            "events": f"test.interactions-{tag}.v1",
            "predictions": f"test.predictions-{tag}.v1",
            "labels": f"test.labels-{tag}.v1",
            "drift_signals": f"test.drift-{tag}.v1",
            "retrain_requests": f"test.retrain-{tag}.v1",
            "model_events": f"test.model-events-{tag}.v1",
            "shadow_predictions": f"test.shadow-{tag}.v1",
        },
        redis={"key_prefix": f"test:{tag}:"},
        worker={"scoring_group": f"streamscore-scoring-{tag}", "processing_guarantee": guarantee},
        metrics={"enabled": False},
    )
    stack = EmbeddedStack(settings)
    try:
        up = stack.up(topic_table(settings.topics), cluster=True)
        assert up.healthy
        pw = kafka_cluster.passwords(home / "cluster")
        assert set(pw) == {"streamscore-admin", *(f"streamscore-{r}" for r in ROLES)}
        yield Cluster(settings, pw, 0.0)
    finally:
        stack.down()
