"""Least privilege on the real Redis ACLs, over TLS, on a lone server and on the Cluster: each
role does its job and is refused the rest; a wrong password or CA is one line naming it; a
Cluster with every node stopped is an outage to every adapter."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import FeatureStoreUnavailable, RedisRefused
from services.embedded import tls
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.labels.store import PredictionStore, Stored
from services.ratelimit.bucket import API_NAMESPACE, RedisTokenBuckets
from services.redisconn.client import connect
from streams.api_keys import ApiKeys
from tests.redis_fixtures import SecureRedis, secure_cluster

SPEC = FeatureSpec.load()
PREFIX = "streamscore:"  # the prefix the users' rules name


@pytest.fixture(params=["redis-acl-tls", "redis-cluster"])
def secure(request: pytest.FixtureRequest) -> SecureRedis:
    name = "redis_standalone_secure" if request.param == "redis-acl-tls" else "redis_cluster_secure"
    found: SecureRedis = request.getfixturevalue(name)
    return found


def test_the_worker_reads_features_writes_predictions_and_its_buckets(secure: SecureRedis) -> None:
    entity = uuid.uuid4().hex
    row = np.arange(16, dtype=np.float32).reshape(1, 16)
    RedisFeatureStore(secure.client("admin"), SPEC, PREFIX).put_many("user", [entity], row)
    worker = secure.client("worker")
    got = RedisFeatureStore(worker, SPEC, PREFIX).get_many({"user": [entity]})["user"]
    assert got.found.tolist() == [True] and np.array_equal(got.values, row)
    events = [uuid.uuid4().hex for _ in range(40)]
    stored = PredictionStore(worker, PREFIX, 60)
    assert stored.put_many("served", [(e, Stored("3", "champion", 0.25)) for e in events]) == 40
    read = PredictionStore(secure.client("control"), PREFIX, 60).get_many("served", events)
    assert read == [Stored("3", "champion", 0.25)] * 40
    producers = {uuid.uuid4().hex: 5 for _ in range(30)}
    buckets = RedisTokenBuckets(worker, PREFIX, rate=0.001, burst=3)
    assert buckets.take(producers) == {p: 3 for p in producers}


def test_the_worker_cannot_write_features_or_read_api_keys(secure: SecureRedis) -> None:
    key, _ = ApiKeys(secure.client("admin"), PREFIX).create("partner")
    worker = secure.client("worker")
    with pytest.raises(RedisRefused, match="NOPERM"):
        RedisFeatureStore(worker, SPEC, PREFIX).put_many(
            "user", ["x"], np.zeros((1, 16), np.float32)
        )
    with pytest.raises(RedisRefused, match="NOPERM"):
        ApiKeys(worker, PREFIX).verify(f"ssk_{key.id}_guess")
    api_buckets = RedisTokenBuckets(worker, PREFIX, 1.0, 5, namespace=API_NAMESPACE)
    with pytest.raises(RedisRefused, match="NOPERM"):
        api_buckets.take({key.id: 1})


def test_the_api_reads_its_keys_and_cannot_touch_the_stream(secure: SecureRedis) -> None:
    key, token = ApiKeys(secure.client("admin"), PREFIX).create("partner")
    api = secure.client("api")
    found = ApiKeys(api, PREFIX).verify(token)
    assert found is not None and found.id == key.id
    assert RedisTokenBuckets(api, PREFIX, 0.001, 5, namespace=API_NAMESPACE).take({key.id: 9}) == {
        key.id: 5
    }
    with pytest.raises(RedisRefused, match="NOPERM"):
        RedisTokenBuckets(api, PREFIX, 1.0, 5).take({"p": 1})
    with pytest.raises(RedisRefused, match="NOPERM"):
        PredictionStore(api, PREFIX, 60).put_many("served", [("e", Stored("1", "c", 0.5))])


def test_a_wrong_password_is_one_line_naming_the_user(secure: SecureRedis) -> None:
    cfg = secure.role_settings("worker", password="not-the-password")
    # A single server answers WRONGPASS on the command; a Redis Cluster's client meets it while
    # it reads the slots (in connect): a refusal both times, never an outage.
    with pytest.raises(RedisRefused) as err:
        RedisFeatureStore(connect(cfg, secure.url), SPEC, PREFIX).get_many({"user": ["u"]})
    text = str(err.value)
    assert "\n" not in text and "not-the-password" not in text
    assert "refused user 'streamscore-worker'" in text and "wrong password" in text
    assert err.value.cause == "wrongpass"


def test_a_wrong_ca_is_one_line_naming_the_ca(
    secure: SecureRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other-ca")
    wrong = tls.ensure_ca(other)
    cfg = secure.role_settings("worker").model_copy(update={"tls_ca_file": wrong})
    with pytest.raises(FeatureStoreUnavailable) as err:
        RedisFeatureStore(connect(cfg, secure.url), SPEC, PREFIX).get_many({"user": ["u"]})
    text = str(err.value)
    assert "\n" not in text
    assert "CERTIFICATE_VERIFY_FAILED" in text or "TLS certificate not trusted" in text


def test_every_cluster_node_stopped_is_an_outage_to_every_adapter(tmp_path: Path) -> None:
    """On a Redis Cluster of its own (the shared one serves the other tests), clients that have
    read its layout, then every node stopped: each adapter raises FeatureStoreUnavailable (the
    dependency gate's policy applies), in one line; none lets redis-py's RedisClusterException
    (no RedisError) out, which stopped the worker with exit 1."""
    with secure_cluster(tmp_path) as cluster:
        worker, api = cluster.client("worker"), cluster.client("api")
        features = RedisFeatureStore(worker, SPEC, PREFIX)
        assert features.get_many({"user": ["u"]})["user"].found.tolist() == [False]
        stack = cluster.stack
        assert stack is not None and stack.down() == list(range(6))
        calls: dict[str, Callable[[], object]] = {
            "features": lambda: features.get_many({"user": ["u1", "u2", "u3"]}),
            "predictions": lambda: PredictionStore(worker, PREFIX, 60).put_many(
                "served", [(f"e{i}", Stored("1", "champion", 0.5)) for i in range(3)]
            ),
            "rate limits": lambda: RedisTokenBuckets(worker, PREFIX, 1.0, 5).take({"p": 1}),
            "api keys": lambda: ApiKeys(api, PREFIX).verify("ssk_ab12_secret"),
        }
        for name, call in calls.items():
            with pytest.raises(FeatureStoreUnavailable) as err:
                call()
            assert "\n" not in str(err.value), name
