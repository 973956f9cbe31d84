"""Per-producer quotas: who is charged, in what order a quota admits, and a retried batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from services.ratelimit.bucket import ChargeOnce, producer_of, split_by_quota


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
