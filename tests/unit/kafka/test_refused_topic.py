"""A topic the principal may not describe is a refusal, never "does not exist": a secured
cluster answers its metadata with TOPIC_AUTHORIZATION_FAILED (and no partitions), and `tail`,
the ranged reads, the time-window read and the model-event watcher each name the refusal.
A hand-written consumer stands in for librdkafka's metadata answer."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from services.core.errors import BrokerUnavailable, NotFound
from services.core.settings import Settings
from services.kafka import replay, tail
from services.kafka.denied import from_error
from services.kafka.ranges import partitions_of, watermarks
from streams import model_watcher

AS_WORKER = Settings(kafka={"sasl_username": "streamscore-worker"})
LINE = "streamscore-worker is not allowed to Read topic p.labels.v1 (TOPIC_AUTHORIZATION_FAILED)"


class _Meta:
    def __init__(self, error: KafkaError | None, partitions: int) -> None:
        self.error = error
        self.partitions = {p: object() for p in range(partitions)}


class MetadataOnly:
    """Answers a topic's metadata as the cluster does: refused, missing, or 2 partitions."""

    def __init__(self, answer: str, *_args: Any, **_kwargs: Any) -> None:
        self.answer = answer
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        if self.answer == "missing":
            return SimpleNamespace(topics={})
        if self.answer == "refused":
            meta = _Meta(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), 0)
        else:
            meta = _Meta(None, 2)
        return SimpleNamespace(topics={topic: meta})

    def close(self) -> None:
        self.closed = True


def refused_consumer(*_args: Any, **_kwargs: Any) -> MetadataOnly:
    return MetadataOnly("refused")


def test_a_refused_topic_is_a_refusal_and_a_missing_one_not_found() -> None:
    with pytest.raises(BrokerUnavailable) as err:
        partitions_of(MetadataOnly("refused"), "p.labels.v1")  # type: ignore[arg-type]
    assert str(from_error(AS_WORKER, str(err.value), err.value.stage, err.value.topic)) == LINE
    with pytest.raises(NotFound):
        partitions_of(MetadataOnly("missing"), "p.labels.v1")  # type: ignore[arg-type]
    assert partitions_of(MetadataOnly("there"), "p.labels.v1") == [0, 1]  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
        watermarks(MetadataOnly("refused"), "p.labels.v1")  # type: ignore[arg-type]


@pytest.mark.parametrize("start_at", [None, (0, 5)])
def test_tail_of_a_refused_topic_names_the_refusal(
    monkeypatch: pytest.MonkeyPatch, start_at: tuple[int, int] | None
) -> None:
    monkeypatch.setattr(tail, "Consumer", refused_consumer)
    with pytest.raises(BrokerUnavailable) as err:
        tail.read_window(AS_WORKER, "p.labels.v1", 1, start_at=start_at)
    assert str(from_error(AS_WORKER, str(err.value), err.value.stage, err.value.topic)) == LINE


def test_a_window_of_a_refused_topic_names_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "Consumer", refused_consumer)
    with pytest.raises(BrokerUnavailable) as err:
        replay.read_since(AS_WORKER, "p.labels.v1", 0, 10)
    assert "not found" not in str(err.value)
    assert str(from_error(AS_WORKER, str(err.value), err.value.stage, err.value.topic)) == LINE


def test_the_model_watcher_says_it_was_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(model_watcher, "Consumer", refused_consumer)
    s = Settings(kafka={"sasl_username": "streamscore-api"}, topics={"model_events": "m.v1"})
    with caplog.at_level(logging.WARNING, logger=model_watcher.__name__):
        got = model_watcher.ModelWatcher._subscribe(SimpleNamespace(settings=s))  # type: ignore[arg-type]
    assert got is None
    assert [r.getMessage() for r in caplog.records] == [
        "no model events (streamscore-api is not allowed to Read topic m.v1 "
        f"(TOPIC_AUTHORIZATION_FAILED)): polling the registry every {s.model.poll_seconds}s only"
    ]
