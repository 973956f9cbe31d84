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

SPEC = FeatureSpec.load()


def _memory(_: str) -> FeatureStore:
    return InMemoryFeatureStore(SPEC)


def _redis(url: str) -> FeatureStore:
    return RedisFeatureStore(redis.Redis.from_url(url), SPEC, f"test:{uuid.uuid4().hex}:")


@pytest.fixture(params=[_memory, _redis], ids=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_url: str) -> FeatureStore:
    factory: Callable[[str], FeatureStore] = request.param
    return factory(redis_url)


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
