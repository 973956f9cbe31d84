"""Secured Redis for tests: a Redis Cluster (three primaries, three replicas, TLS, ACL users) and
a lone server with the same TLS and users, both started by the project's own code on loopback.

Import the fixtures into a conftest (``from tests.redis_fixtures import ...``). They need a
redis-server 7+ built with TLS (Debian's ``redis-server``); without one they fail, never skip.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.settings import LocalSettings, RedisSettings, Settings
from services.embedded import redis_cluster, tls
from services.embedded.process import ProcessRecord, spawn, start_ticks, stop
from services.embedded.redis_cluster import RedisClusterStack, passwords, render_config
from services.redisconn import acl
from services.redisconn.client import Client, connect
from tests.waiting import wait_for


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base(count: int) -> int:
    """A port p with p..p+count-1 and their cluster-bus ports (+10000) all free."""
    rng = random.Random()  # noqa: S311 (a port, not a secret)
    for _ in range(200):
        base = rng.randrange(30000, 40000)
        if all(_free(base + i) and _free(base + i + 10000) for i in range(count)):
            return base
    raise RuntimeError("no free block of ports on loopback")


@dataclass
class SecureRedis:
    """Where a secured Redis is and how each role connects to it."""

    settings: Settings
    url: str
    mode: str
    stack: RedisClusterStack | None = None
    seconds: float = 0.0

    def role_settings(self, role: str, password: str | None = None) -> RedisSettings:
        pw = passwords(self.settings)[acl.user(role)] if password is None else password
        return redis_cluster.role_redis(self.settings, role, pw).model_copy(
            update={"url": self.url, "mode": self.mode}
        )

    def client(self, role: str, password: str | None = None) -> Client:
        cfg = self.role_settings(role, password)
        return connect(cfg, self.url)


@pytest.fixture(scope="session")
def redis_cluster_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """The Redis Cluster of `local up --cluster`, on its own ports and home."""
    home = tmp_path_factory.mktemp("rcluster")
    settings = Settings(home=home, local=LocalSettings(redis_cluster_port=free_base(6)))
    stack = RedisClusterStack(settings, home / "local")
    try:
        info = stack.up()
        yield SecureRedis(settings, info.seed, "cluster", stack, info.seconds)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def redis_standalone_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """One redis-server with the cluster's TLS and ACL users, cluster mode off."""
    home = tmp_path_factory.mktemp("rsecure")
    port = free_base(1)
    settings = Settings(home=home)
    tls.ensure_ca(redis_cluster.ca_dir(settings))
    node_dir = home / "node"
    node_dir.mkdir()
    tls.issue_node_cert(redis_cluster.ca_dir(settings), node_dir / "node.pem", "redis")
    conf = node_dir / "redis.conf"
    conf.write_text(
        render_config(settings, 0, node_dir, passwords(settings), cluster=False, tls_port=port)
    )
    argv = [redis_cluster.binary(), str(conf)]
    proc = spawn(argv, node_dir / "redis.log", node_dir)
    ticks = start_ticks(proc.pid)
    assert ticks is not None, (node_dir / "redis.log").read_text()
    record = ProcessRecord("redis", "redis", proc.pid, tuple(argv), "", "", time.time(), ticks)
    secure = SecureRedis(settings, f"rediss://127.0.0.1:{port}/0", "standalone")
    try:
        admin = secure.client("admin")
        wait_for(lambda: _answers(admin), 20, "the TLS redis-server to answer")
        yield secure
    finally:
        stop(record)


def _answers(client: Client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 (not up yet)
        return False


def ca_file(secure: SecureRedis) -> Path:
    return redis_cluster.ca_dir(secure.settings) / tls.CA_CERT
