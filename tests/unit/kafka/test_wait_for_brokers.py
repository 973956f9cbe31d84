"""`topics create --wait-brokers`: the init job waits for every broker before creating topics."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.core.errors import BrokerUnavailable
from services.kafka.admin import count_brokers, wait_for_brokers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_it_returns_once_every_broker_is_a_member() -> None:
    clock = Clock()
    answers = iter([1, 2, 3, 3])
    assert wait_for_brokers(lambda: next(answers), 3, 60, clock=clock, sleep=clock.sleep) == 3
    assert clock.now == 4.0  # two waits of 2 s


def test_an_unreachable_cluster_is_asked_again_until_the_deadline() -> None:
    clock = Clock()
    calls = []

    def count() -> int:
        calls.append(clock.now)
        if len(calls) < 3:
            raise BrokerUnavailable("cannot describe the cluster: timed out")
        return 3

    assert wait_for_brokers(count, 3, 60, clock=clock, sleep=clock.sleep) == 3
    assert calls == [0.0, 2.0, 4.0]


def test_too_few_brokers_at_the_deadline_is_one_line_naming_them() -> None:
    clock = Clock()
    with pytest.raises(BrokerUnavailable) as refused:
        wait_for_brokers(lambda: 2, 3, 10, clock=clock, sleep=clock.sleep)
    assert str(refused.value) == "2 of 3 brokers in the cluster after 10 s"
    assert clock.now == 10.0


class Admin:
    def __init__(self, nodes: int | None) -> None:
        self.nodes = nodes

    def describe_cluster(self, request_timeout: float) -> Future[Any]:
        future: Future[Any] = Future()
        if self.nodes is None:
            future.set_exception(KafkaException(KafkaError(KafkaError._TRANSPORT)))
        else:
            future.set_result(SimpleNamespace(nodes=[object()] * self.nodes))
        return future


def test_count_brokers_reads_the_cluster_description() -> None:
    """A hand-written stand-in for the AdminClient: only describe_cluster is asked."""
    assert count_brokers(Admin(3), 1.0) == 3
    with pytest.raises(BrokerUnavailable, match="cannot describe the cluster"):
        count_brokers(Admin(None), 1.0)
