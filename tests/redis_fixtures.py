"""Secured Redis for tests: a Redis Cluster (three primaries, three replicas, TLS, ACL users), a
lone server with the same TLS and users, and a Sentinel set (a primary, its replica, three
sentinels), all started on loopback (the first by the project's own code).

Import the fixtures into a conftest (``from tests.redis_fixtures import ...``). They need a
redis-server 7+ built with TLS (Debian's ``redis-server``); without one they fail, never skip.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

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
    extra: dict[str, Any] = field(default_factory=dict)  # more RedisSettings (the sentinels)

    def role_settings(self, role: str, password: str | None = None) -> RedisSettings:
        pw = passwords(self.settings)[acl.user(role)] if password is None else password
        return redis_cluster.role_redis(self.settings, role, pw).model_copy(
            update={"url": self.url, "mode": self.mode, **self.extra}
        )

    def client(self, role: str, password: str | None = None) -> Client:
        cfg = self.role_settings(role, password)
        return connect(cfg, self.url)


@contextlib.contextmanager
def secure_cluster(home: Path) -> Iterator[SecureRedis]:
    """The Redis Cluster of `local up --cluster`, on its own ports and ``home``; every node
    stopped on the way out."""
    settings = Settings(home=home, local=LocalSettings(redis_cluster_port=free_base(6)))
    stack = RedisClusterStack(settings, home / "local")
    try:
        info = stack.up()
        yield SecureRedis(settings, info.seed, "cluster", stack, info.seconds)
    finally:
        stack.down()


@pytest.fixture(scope="session")
def redis_cluster_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """The Redis Cluster of `local up --cluster`, on its own ports and home."""
    with secure_cluster(tmp_path_factory.mktemp("rcluster")) as found:
        yield found


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


# -- Sentinel: a primary, its replica and three sentinels ---------------------------------------

SENTINEL_SERVICE = "streamscore"


@dataclass
class SentinelSet:
    """A primary and its replica (TLS, the ACL users) watched by three sentinels (TLS, no user
    of their own), each a process of its own on loopback."""

    secure: SecureRedis
    data_ports: tuple[int, int]
    sentinel_ports: tuple[int, int, int]
    records: dict[str, ProcessRecord]

    def sentinel(self, n: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.sentinel_ports[n],
            ssl=True,
            ssl_ca_certs=str(ca_file(self.secure)),
            ssl_cert_reqs="required",
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for n in range(3):
            try:
                got = self.sentinel(n).sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
            except redis.RedisError:
                continue
            if got:
                return int(got[1])
        return None


def _sentinel_config(settings: Settings, node_dir: Path, port: int, primary: int) -> str:
    """One sentinel's config: TLS to clients and to the data nodes (`tls-replication`), and the
    admin user on the data nodes (a sentinel sends INFO, CONFIG, SLAVEOF, CLIENT, PUBLISH and
    SUBSCRIBE; the test set grants it the admin's rules rather than a user of its own)."""
    admin = acl.user(acl.ADMIN_ROLE)
    cert = node_dir / "node.pem"
    return "\n".join(
        [
            "bind 127.0.0.1",
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {cert}",
            f"tls-key-file {cert}",
            f"tls-ca-cert-file {redis_cluster.ca_dir(settings) / tls.CA_CERT}",
            "tls-auth-clients optional",
            "tls-replication yes",
            f"dir {node_dir}",
            "daemonize no",
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2",
            f"sentinel auth-user {SENTINEL_SERVICE} {admin}",
            f"sentinel auth-pass {SENTINEL_SERVICE} {passwords(settings)[admin]}",
            # A dead primary is noticed after 1 s (the default is 30 s: a test would wait).
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000",
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000",
            "",
        ]
    )


def _launch(name: str, argv: list[str], node_dir: Path) -> ProcessRecord:
    proc = spawn(argv, node_dir / f"{name}.log", node_dir)
    ticks = start_ticks(proc.pid)
    assert ticks is not None, (node_dir / f"{name}.log").read_text()
    return ProcessRecord(name, "redis", proc.pid, tuple(argv), "", "", time.time(), ticks)


@contextlib.contextmanager
def sentinel_set(home: Path) -> Iterator[SentinelSet]:
    """Start a Sentinel-watched primary with one replica; yields once every sentinel knows the
    replica and the two other sentinels (so that a failover can be agreed), and the replica is
    in sync. Stops every process on the way out."""
    base = free_base(5)
    settings = Settings(home=home)
    ca = redis_cluster.ca_dir(settings)
    tls.ensure_ca(ca)
    pw = passwords(settings)
    records: dict[str, ProcessRecord] = {}
    try:
        for n in range(2):  # the primary, then its replica
            node_dir = home / f"data-{n}"
            node_dir.mkdir()
            tls.issue_node_cert(ca, node_dir / "node.pem", "redis")
            conf = render_config(settings, n, node_dir, pw, cluster=False, tls_port=base + n)
            if n:
                conf += f"replicaof 127.0.0.1 {base}\n"
            (node_dir / "redis.conf").write_text(conf)
            records[f"redis-{n}"] = _launch(
                f"redis-{n}", [redis_cluster.binary(), str(node_dir / "redis.conf")], node_dir
            )
        for s in range(3):
            node_dir = home / f"sentinel-{s}"
            node_dir.mkdir()
            tls.issue_node_cert(ca, node_dir / "node.pem", "sentinel")
            conf_path = node_dir / "sentinel.conf"  # rewritten by the sentinel as it learns
            conf_path.write_text(_sentinel_config(settings, node_dir, base + 2 + s, base))
            records[f"sentinel-{s}"] = _launch(
                f"sentinel-{s}", [redis_cluster.binary(), str(conf_path), "--sentinel"], node_dir
            )
        secure = SecureRedis(
            settings,
            f"rediss://127.0.0.1:{base}/0",
            "sentinel",
            extra={
                "sentinels": ",".join(f"127.0.0.1:{base + 2 + s}" for s in range(3)),
                "sentinel_service": SENTINEL_SERVICE,
            },
        )
        found = SentinelSet(secure, (base, base + 1), (base + 2, base + 3, base + 4), records)

        def agreed() -> bool:
            try:
                for n in range(3):
                    state = found.sentinel(n).sentinel_master(SENTINEL_SERVICE)
                    if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                        return False
                info = secure.client("admin").info("replication")
            except redis.RedisError:
                return False
            return info.get("connected_slaves") == 1 and "online" in str(info.get("slave0"))

        wait_for(agreed, 60, "three sentinels agreeing on a primary with one replica in sync")
        yield found
    finally:
        for record in records.values():
            stop(record)


@pytest.fixture(scope="session")
def redis_sentinel_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    """A Sentinel-watched primary with one replica, TLS and the ACL users (the contract suite
    reads and writes through the sentinels' answer)."""
    with sentinel_set(tmp_path_factory.mktemp("rsentinel")) as found:
        yield found.secure
