"""A read the cluster refuses stops the worker with one line naming it (a decided stop), where it
used to log a warning on every poll for ever; other consume errors stay warnings."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from services.core.errors import NotAuthorized
from tests.unit.worker.test_membership import TOPIC, FakeConsumer, _membership, consumers

__all__ = ["consumers"]  # the fixture, used by name


class ErrorMessage:
    """What ``consume`` hands out for an error: no value, an error, maybe a topic."""

    def __init__(self, code: int, topic: str | None) -> None:
        self._error = KafkaError(code)
        self._topic = topic

    def error(self) -> KafkaError:
        return self._error

    def topic(self) -> str | None:
        return self._topic


def _taking(consumer: FakeConsumer, messages: list[Any]) -> None:
    consumer.consume = lambda num_messages=1, timeout=-1: list(messages)  # type: ignore[attr-defined]


def test_a_refused_group_stops_the_take_naming_the_group(consumers: list[FakeConsumer]) -> None:
    m = _membership()

    _taking(consumers[-1], [ErrorMessage(KafkaError.GROUP_AUTHORIZATION_FAILED, None)])
    with pytest.raises(NotAuthorized) as caught:
        m.take(10, 0.0)
    assert str(caught.value) == (
        "this client (PLAINTEXT) is not allowed to Read group streamscore-scoring "
        "(GROUP_AUTHORIZATION_FAILED)"
    )


def test_a_refused_topic_stops_the_take_naming_the_topic(consumers: list[FakeConsumer]) -> None:
    m = _membership()

    _taking(consumers[-1], [ErrorMessage(KafkaError.TOPIC_AUTHORIZATION_FAILED, TOPIC)])
    with pytest.raises(NotAuthorized, match=f"Read topic {TOPIC} \\(TOPIC_AUTHORIZATION_FAILED\\)"):
        m.take(10, 0.0)


def test_other_consume_errors_are_warnings(
    consumers: list[FakeConsumer], caplog: pytest.LogCaptureFixture
) -> None:
    m = _membership()

    _taking(consumers[-1], [ErrorMessage(KafkaError._TRANSPORT, TOPIC)])
    assert m.take(10, 0.0) == []
    assert "consume error" in caplog.text
