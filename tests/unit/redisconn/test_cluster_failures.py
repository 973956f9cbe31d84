"""A Redis Cluster none of whose nodes answers, or whose nodes all refuse the user, is an outage
or a refusal like any other Redis failure: redis-py 8 reports it as a ``RedisClusterException``,
which is no ``RedisError``, and every adapter turns it into ``FeatureStoreUnavailable`` (the
dependency gate's policy applies) or ``RedisRefused`` (exit 2 with one line), never lets it out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, RedisRefused
from services.core.settings import RedisSettings
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.labels.store import PredictionStore, Stored
from services.ratelimit.bucket import RedisTokenBuckets
from services.redisconn import client as redis_client
from services.redisconn import slots
from services.redisconn.client import REDIS_ERRORS, cause_of, connect, describe
from streams.api_keys import ApiKeys

SPEC = FeatureSpec.load()
USER = "streamscore-worker"
PASSWORD = "pw-never-shown-9"  # noqa: S105 (a test's own)


def _down() -> redis.ConnectionError:
    return redis.ConnectionError("Error 111 connecting to 10.0.0.5:6380. Connection refused.")


def _wrongpass() -> redis.AuthenticationError:
    return redis.AuthenticationError("invalid username-password pair or user is disabled.")


def _layout_error(node_error: Exception) -> RedisClusterException:
    """What redis-py 8.1's ``NodesManager.initialize`` raises when no startup node answers
    CLUSTER SLOTS (``raise ... from`` the last node's error)."""
    exc = RedisClusterException(
        "Redis Cluster cannot be connected. Please provide at least one reachable node: "
        f"{node_error}"
    )
    exc.__cause__ = node_error
    return exc


class Node:
    def __init__(self, name: str) -> None:
        self.name = name


class Layout:
    """Stands for redis-py's ``NodesManager``: it knows the nodes it last read (or none, when
    ``covered`` is False), and reading the layout again fails with ``error``."""

    def __init__(self, error: Exception, covered: bool = True) -> None:
        self.error, self.covered = error, covered
        self.reads = 0
        self.connection_kwargs: dict[str, Any] = {
            "username": USER,
            "password": PASSWORD,
            "host": "10.0.0.5",
            "port": 6380,
        }

    def get_node_from_slot(self, slot: int) -> Node:
        if not self.covered:
            raise SlotNotCoveredError(f'Slot "{slot}" not covered by the cluster.')
        return Node("10.0.0.5:6380")

    def initialize(self) -> None:
        self.reads += 1
        raise self.error


class DeadPipeline:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def execute_command(self, *args: Any) -> None:
        return None

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        raise self.error


class DeadNode:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def pipeline(self, transaction: bool = True) -> DeadPipeline:
        return DeadPipeline(self.error)


class DeadCluster(RedisCluster):
    """A Redis Cluster client whose nodes all fail with ``node_error`` (a lost connection, or
    WRONGPASS after a password rotation): every pipeline to a node fails so, and reading the
    layout again fails as redis-py reports it. No network."""

    def __init__(self, node_error: Exception, covered: bool = True) -> None:
        # No super().__init__: it would read the layout of a real cluster.
        self.node_error = node_error
        self.layout = Layout(_layout_error(node_error), covered)
        self.nodes_manager = self.layout  # type: ignore[assignment]  # the fake stands for it

    def get_redis_connection(self, node: Any) -> Any:
        return DeadNode(self.node_error)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # A single command (HGETALL, HSET): redis-py re-reads the layout on a lost connection
        # or a refused login, which fails with every node down.
        self.nodes_manager.initialize()


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "RETRY_PAUSE_SECONDS", 0.0)  # the retries' real waits, made nil


CALLS: dict[str, Callable[[RedisCluster], Any]] = {
    "features": lambda c: RedisFeatureStore(c, SPEC, "ss:").get_many({"user": ["u1", "u2"]}),
    "predictions write": lambda c: PredictionStore(c, "ss:", 60).put_many(
        "served", [("e1", Stored("1", "champion", 0.5))]
    ),
    "predictions read": lambda c: PredictionStore(c, "ss:", 60).get_many("served", ["e1"]),
    "rate limits": lambda c: RedisTokenBuckets(c, "ss:", 1.0, 5).take({"p1": 1, "p2": 2}),
    "api keys": lambda c: ApiKeys(c, "ss:").verify("ssk_ab12_secret"),
}


def test_the_errors_every_adapter_catches_include_the_cluster_clients_own() -> None:
    # In redis-py 8 the Cluster client's own errors are not RedisErrors: caught only if named.
    assert not issubclass(RedisClusterException, redis.RedisError)
    assert issubclass(SlotNotCoveredError, REDIS_ERRORS)
    assert issubclass(RedisClusterException, REDIS_ERRORS)


def test_a_layout_that_cannot_be_read_is_one_more_failed_try() -> None:
    cluster = DeadCluster(_down())
    with pytest.raises(redis.ConnectionError):
        slots.per_slot(cluster, ["a", "b"], [[0], [1]], lambda g: ("MGET", "k"))
    assert cluster.layout.reads == slots.RETRIES


@pytest.mark.parametrize("call", CALLS, ids=list(CALLS))
def test_every_node_down_is_an_outage(call: str) -> None:
    with pytest.raises(FeatureStoreUnavailable) as err:
        CALLS[call](DeadCluster(_down()))
    assert "\n" not in str(err.value)


def test_slots_no_node_covers_are_an_outage() -> None:
    with pytest.raises(FeatureStoreUnavailable, match="not covered"):
        CALLS["features"](DeadCluster(_down(), covered=False))


@pytest.mark.parametrize("call", CALLS, ids=list(CALLS))
def test_every_node_refusing_the_user_is_a_refusal(call: str) -> None:
    before = sum(
        metrics.REDIS_REFUSALS.labels(cause="wrongpass", command=c)._value.get()
        for c in ("MGET", "EVALSHA", "HGETALL")
    )
    with pytest.raises(RedisRefused) as err:
        CALLS[call](DeadCluster(_wrongpass()))
    text = str(err.value)
    assert text.startswith(f"redis at 10.0.0.5:6380 refused user '{USER}' (WRONGPASS")
    assert PASSWORD not in text and "\n" not in text
    after = sum(
        metrics.REDIS_REFUSALS.labels(cause="wrongpass", command=c)._value.get()
        for c in ("MGET", "EVALSHA", "HGETALL")
    )
    assert after == before + 1


def test_a_refusal_is_found_under_the_errors_it_was_wrapped_in() -> None:
    # redis-py turns a NOPERM on CLUSTER SLOTS into "Cluster mode is not enabled on this node",
    # raised while handling it (its context), and wraps that when no node is left to try.
    inner = RedisClusterException("Cluster mode is not enabled on this node")
    inner.__context__ = redis.exceptions.NoPermissionError(
        "this user has no permissions to run the 'cluster|slots' command"
    )
    layout = _layout_error(inner)
    assert cause_of(layout) == "noperm"
    cfg = RedisSettings(username=USER)
    assert describe(layout, cfg, "h:1") == (
        f"redis at h:1: user '{USER}' lacks a permission: this user has no permissions to run "
        "the 'cluster|slots' command"
    )
    assert cause_of(_layout_error(_down())) is None


def test_a_cluster_refusing_the_user_at_start_is_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*args: Any, **kwargs: Any) -> RedisCluster:
        raise _layout_error(_wrongpass())

    monkeypatch.setattr(redis_client.RedisCluster, "from_url", refused)
    cfg = RedisSettings(mode="cluster", username=USER, password=PASSWORD)
    before = metrics.REDIS_REFUSALS.labels(cause="wrongpass", command="CLUSTER SLOTS")._value.get()
    with pytest.raises(RedisRefused) as err:
        connect(cfg, "rediss://10.0.0.5:6380/0")
    assert str(err.value) == (
        f"redis at 10.0.0.5:6380 refused user '{USER}': wrong password, or the user is disabled"
    )
    assert (err.value.cause, err.value.command) == ("wrongpass", "CLUSTER SLOTS")
    after = metrics.REDIS_REFUSALS.labels(cause="wrongpass", command="CLUSTER SLOTS")._value.get()
    assert after == before + 1
