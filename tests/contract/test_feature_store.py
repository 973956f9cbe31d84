"""One contract for every FeatureStore: the in-memory fake and Redis (a real redis-server)."""

from __future__ import annotations

import socket
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
from tests.redis_fixtures import SecureRedis

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
    params=["memory", "redis", "redis-acl-tls", "redis-cluster"],
)
def store(request: pytest.FixtureRequest) -> FeatureStore:
    """Every implementation: the fake; Redis plain; Redis with TLS and an ACL user; a Redis
    Cluster (three primaries and their replicas) with TLS and ACL users."""
    kind: str = request.param
    if kind == "memory":
        return _memory("")
    if kind == "redis":
        return _redis(request.getfixturevalue("redis_url"))
    fixture = "redis_standalone_secure" if kind == "redis-acl-tls" else "redis_cluster_secure"
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
