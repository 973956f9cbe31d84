"""One contract for every FeatureStore: the in-memory fake and Redis (a real redis-server)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from services.core.errors import FeatureStoreUnavailable
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore, InMemoryFeatureStore
from tests.redis_fixtures import SecureRedis, sentinel_set
from tests.waiting import wait_for

SPEC = FeatureSpec.load()


def _memory(_: str) -> FeatureStore:
    return InMemoryFeatureStore(SPEC)


def _redis(url: str) -> FeatureStore:
    return RedisFeatureStore(redis.Redis.from_url(url), SPEC, f"test:{uuid.uuid4().hex}:")


def _secure(fixture: str) -> Callable[[pytest.FixtureRequest], FeatureStore]:
    """A store on a secured Redis as its admin (the user `features load` runs as)."""

    def make(request: pytest.FixtureRequest) -> FeatureStore:
        secure: SecureRedis = request.getfixturevalue(fixture)
        prefix = f"streamscore:test{uuid.uuid4().hex}:"  # under the users' key prefix
        return RedisFeatureStore(secure.client("admin"), SPEC, prefix)

    return make


@pytest.fixture(
    params=["memory", "redis", "redis-acl-tls", "redis-cluster", "redis-sentinel"],
)
def store(request: pytest.FixtureRequest) -> FeatureStore:
    """Every implementation: the fake; Redis plain; Redis with TLS and an ACL user; a Redis
    Cluster (three primaries and their replicas) with TLS and ACL users; a primary found
    through three sentinels, with TLS and ACL users."""
    kind: str = request.param
    if kind == "memory":
        return _memory("")
    if kind == "redis":
        return _redis(request.getfixturevalue("redis_url"))
    fixture = {
        "redis-acl-tls": "redis_standalone_secure",
        "redis-cluster": "redis_cluster_secure",
        "redis-sentinel": "redis_sentinel_secure",
    }[kind]
    return _secure(fixture)(request)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)


def test_written_rows_come_back_bit_for_bit(store: FeatureStore) -> None:
    values = rows(5)
    assert store.put_many("user", [f"u{i}" for i in range(5)], values) == 5
    got = store.get_many({"user": ["u3", "u0", "u3"]})["user"]
    assert np.array_equal(got.values, values[[3, 0, 3]])
    assert got.found.tolist() == [True, True, True]


def test_missing_keys_get_declared_defaults(store: FeatureStore) -> None:
    store.put_many("item", ["i1"], rows(1, seed=2))
    got = store.get_many({"item": ["nope", "i1"], "user": ["ghost"]})
    assert got["item"].found.tolist() == [False, True]
    assert np.array_equal(
        got["item"].values[0], np.asarray(SPEC.group("item").defaults, np.float32)
    )
    assert got["user"].found.tolist() == [False]


def test_empty_request(store: FeatureStore) -> None:
    got = store.get_many({"user": []})
    assert got["user"].values.shape == (0, 16)


def test_overwrite_replaces(store: FeatureStore) -> None:
    store.put_many("user", ["u"], rows(1, seed=1))
    store.put_many("user", ["u"], rows(1, seed=2))
    assert np.array_equal(store.get_many({"user": ["u"]})["user"].values, rows(1, seed=2))


def test_redis_row_of_the_wrong_width_is_treated_as_missing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client, SPEC, f"test:{uuid.uuid4().hex}:")
    client.set(store.key("user", "u1"), b"\x00" * 7)
    got = store.get_many({"user": ["u1"]})["user"]
    assert got.found.tolist() == [False]


def test_redis_ttl_is_applied(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client, SPEC, f"test:{uuid.uuid4().hex}:", ttl_seconds=300)
    store.put_many("user", ["u1"], rows(1))
    assert 0 < client.ttl(store.key("user", "u1")) <= 300


def test_unreachable_redis_is_a_transient_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    store = RedisFeatureStore(client, SPEC, "x:")
    with pytest.raises(FeatureStoreUnavailable):
        store.get_many({"user": ["u1"]})


def test_a_cluster_batch_spanning_every_shard_comes_back_in_order(
    redis_cluster_secure: SecureRedis,
) -> None:
    """2,000 entities hash to slots on all three primaries; the worker user reads them back in
    the order asked, with a missing one in the middle, as the admin wrote them."""
    prefix = "streamscore:"  # the prefix the users' rules name
    admin = RedisFeatureStore(redis_cluster_secure.client("admin"), SPEC, prefix)
    worker = RedisFeatureStore(redis_cluster_secure.client("worker"), SPEC, prefix)
    run = uuid.uuid4().hex
    keys = [f"{run}-{i}" for i in range(2000)]
    values = rows(2000, seed=7)
    admin.put_many("user", keys, values)
    asked = [*keys[::-1][:1000], "ghost", *keys[:1000]]
    got = worker.get_many({"user": asked})["user"]
    expected = np.concatenate([values[::-1][:1000], values[:1000]])
    assert np.array_equal(np.delete(got.values, 1000, axis=0), expected)
    assert got.found.tolist() == [True] * 1000 + [False] + [True] * 1000


def test_a_sentinel_failover_while_reading(tmp_path: Path) -> None:
    """The primary is SIGKILLed while the worker user reads a batch of rows over and over: the
    sentinels promote its replica, and the reads (through the sentinels' answer) come back with
    every row as written; no read ever returns other values. A write goes to the new primary."""
    with sentinel_set(tmp_path) as found:
        prefix = "streamscore:"  # the prefix the users' rules name
        admin = RedisFeatureStore(found.secure.client("admin"), SPEC, prefix)
        worker = RedisFeatureStore(found.secure.client("worker"), SPEC, prefix)
        run = uuid.uuid4().hex
        keys = [f"{run}-{i}" for i in range(200)]
        values = rows(200, seed=11)
        admin.put_many("user", keys, values)
        # Every row on the replica before the primary dies (replication is asynchronous).
        assert found.secure.client("admin").wait(1, 5000) == 1
        stop_reading = threading.Event()
        good: list[float] = []
        failed: list[float] = []
        wrong: list[str] = []

        def read() -> None:
            while not stop_reading.is_set():
                try:
                    got = worker.get_many({"user": keys})["user"]
                except FeatureStoreUnavailable:
                    failed.append(time.monotonic())
                    stop_reading.wait(0.05)  # pacing the retries, not a synchronisation
                    continue
                if not (np.array_equal(got.values, values) and all(got.found)):
                    wrong.append(f"{int(got.found.sum())} found")
                good.append(time.monotonic())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_for(lambda: len(good) >= 20, 30, "reads before the kill")
            os.kill(found.records["redis-0"].pid, signal.SIGKILL)
            killed = time.monotonic()
            replica = found.data_ports[1]
            wait_for(lambda: found.primary_port() == replica, 60, "the replica promoted")
            promoted = time.monotonic() - killed
            wait_for(lambda: good[-1] > killed + promoted, 60, "reads from the new primary")
            first_failure = failed[0] if failed else killed
            back = next(t for t in good if t > first_failure) - killed
        finally:
            stop_reading.set()
            reader.join(30)
        assert wrong == [], wrong[:5]
        assert promoted < 30 and back < 30, (promoted, back)
        admin.put_many("user", [f"{run}-after"], rows(1, seed=12))
        assert worker.get_many({"user": [f"{run}-after"]})["user"].found.tolist() == [True]
        print(  # the figures docs/deployment.md quotes (pytest -s)
            f"sentinel failover: replica promoted {promoted:.1f} s after the kill, reads back "
            f"{back:.1f} s after it, {len(failed)} reads failed meanwhile"
        )
