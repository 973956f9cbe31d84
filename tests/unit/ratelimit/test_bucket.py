"""Per-producer quotas: who is charged, in what order a quota admits, a retried batch, and the
buckets when Redis fails (a fake client: no server)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import FeatureStoreUnavailable
from services.ratelimit.bucket import ChargeOnce, RedisTokenBuckets, producer_of, split_by_quota


class Counting:
    """A limiter granting up to ``quota`` per producer per call, and counting what it holds."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.net: Counter[str] = Counter()

    def take(self, requested: Mapping[str, int]) -> dict[str, int]:
        granted = {p: min(n, self.quota) for p, n in requested.items()}
        self.net.update(granted)
        return granted

    def give_back(self, returned: Mapping[str, int]) -> None:
        self.net.subtract(returned)


def test_the_header_names_the_producer_before_the_key() -> None:
    assert producer_of(b"key", [("producer-id", b"api:k1")]) == "api:k1"
    assert producer_of(b"key", [("producer-id", None)]) == "key"
    assert len(producer_of(b"x" * 1000, [])) == 128


@given(st.lists(st.sampled_from("abc"), max_size=50), st.integers(0, 5))
def test_a_quota_admits_each_producers_first_messages(producers: list[str], quota: int) -> None:
    admitted = split_by_quota(producers, {p: quota for p in producers})
    for p in set(producers):
        mine = [ok for q, ok in zip(producers, admitted, strict=True) if q == p]
        assert mine == [True] * min(quota, len(mine)) + [False] * max(0, len(mine) - quota)


def test_a_retried_batch_is_charged_and_refunded_once() -> None:
    inner = Counting(quota=3)
    once = ChargeOnce(inner)
    for _ in range(4):  # the gate retries the batch
        assert once.take({"a": 5, "b": 1}) == {"a": 3, "b": 1}
        once.give_back({"a": 1})
    assert inner.net == Counter({"a": 2, "b": 1})


# -- the buckets when Redis fails --------------------------------------------------------------


class FakeScript:
    """A registered Lua script: raises ``fail`` when set, else answers ``reply(keys, args)``."""

    def __init__(self, reply: Callable[[list[str], list[Any]], Any]) -> None:
        self.reply = reply
        self.fail: BaseException | None = None
        self.calls: list[tuple[list[str], list[Any]]] = []

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        self.calls.append((list(keys), list(args)))
        if self.fail is not None:
            raise self.fail
        return self.reply(keys, args)


class FakeRedis:
    """Just enough of ``redis.Redis`` for the buckets: the take script grants everything."""

    def __init__(self) -> None:
        self.scripts: list[FakeScript] = []

    def register_script(self, _source: str) -> FakeScript:
        wants = len(self.scripts) == 0  # registered first: the take script
        script = FakeScript(lambda keys, args: args[2:] if wants else len(keys))
        self.scripts.append(script)
        return script

    def fail(self, exc: BaseException | None) -> None:
        for script in self.scripts:
            script.fail = exc


def _buckets() -> tuple[RedisTokenBuckets, FakeRedis]:
    client = FakeRedis()
    buckets = RedisTokenBuckets(client, "p:", rate=10.0, burst=20)  # type: ignore[arg-type]
    return buckets, client


FAILURES = [
    redis.ConnectionError("connection refused"),
    redis.TimeoutError("timed out"),
    redis.ResponseError("BUSY a script is running"),
    OSError("connection reset by peer"),
]


@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
def test_a_take_when_redis_fails_raises_feature_store_unavailable(exc: BaseException) -> None:
    buckets, client = _buckets()
    client.fail(exc)
    with pytest.raises(FeatureStoreUnavailable, match="rate-limit buckets unavailable") as info:
        buckets.take({"a": 3, "b": 1})
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
def test_a_refund_when_redis_fails_raises_feature_store_unavailable(exc: BaseException) -> None:
    buckets, client = _buckets()
    client.fail(exc)
    with pytest.raises(FeatureStoreUnavailable, match="rate-limit buckets unavailable") as info:
        buckets.give_back({"a": 2})
    assert info.value.__cause__ is exc


def test_nothing_to_charge_or_refund_never_calls_redis() -> None:
    buckets, client = _buckets()
    client.fail(redis.ConnectionError("down"))
    assert buckets.take({}) == {}
    buckets.give_back({"a": 0})
    assert [s.calls for s in client.scripts] == [[], []]


def test_the_buckets_are_charged_under_their_namespace_when_redis_answers() -> None:
    buckets, client = _buckets()
    assert buckets.take({"a": 3, "b": 1}) == {"a": 3, "b": 1}
    buckets.give_back({"a": 2, "b": 0})
    take, give = client.scripts
    assert take.calls == [(["p:rl:stream:a", "p:rl:stream:b"], [10.0, 20, 3, 1])]
    assert give.calls == [(["p:rl:stream:a"], [20, 2])]


def test_a_batch_retried_after_redis_failed_is_charged_once_when_it_is_back() -> None:
    buckets, client = _buckets()
    once = ChargeOnce(buckets)
    client.fail(redis.ConnectionError("down"))
    with pytest.raises(FeatureStoreUnavailable):
        once.take({"a": 3})
    client.fail(None)
    assert once.take({"a": 3}) == once.take({"a": 3}) == {"a": 3}  # the failure was not kept
    take, _give = client.scripts
    assert len(take.calls) == 2  # the failed call and one charge
