"""/v1/events answers a send Kafka refused (a missing Write grant, a deleted topic) with 500 and
no Retry-After, naming the topic and the operation; an outage keeps its 503 + Retry-After."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from services.core import metrics
from services.core.settings import Settings
from streams.api import Api
from streams.api_answers import unsent

TOPIC = "pay.transactions.v1"
SETTINGS = Settings(kafka={"sasl_username": "streamscore-api"})


class FakeProducer:
    """Reports every send at once with ``error`` (None: delivered), or refuses it on the spot."""

    def __init__(self, error: KafkaError | None = None, raises: KafkaError | None = None) -> None:
        self.error, self.raises = error, raises

    def produce(
        self, topic: str, *, key: bytes, value: bytes, headers: Any, on_delivery: Any
    ) -> None:
        if self.raises is not None:
            raise KafkaException(self.raises)
        on_delivery(self.error, None)


def _publish(producer: FakeProducer) -> tuple[list[str], str]:
    """``Api.publish`` over a fake producer and codec (the rest of the API is not needed)."""
    api = SimpleNamespace(
        scorer=SimpleNamespace(
            codec=SimpleNamespace(encode_many=lambda events: [b"v"] * len(events)),
            domain=SimpleNamespace(key_field="card_id"),
        ),
        producer=producer,
        settings=SETTINGS,
        input_topic=TOPIC,
    )
    events = [{"event_id": f"e{i}", "card_id": "c"} for i in range(3)]
    return Api.publish(api, events, "api:k1")  # type: ignore[arg-type]


def _answer(producer: FakeProducer) -> tuple[int, dict[str, str], dict[str, Any]]:
    acked, why = _publish(producer)
    response = unsent(SETTINGS, TOPIC, acked, why)
    return response.status_code, dict(response.headers), json.loads(bytes(response.body))


def _count(code: str) -> float:
    return float(metrics.KAFKA_REFUSALS.labels(operation="Write", code=code)._value.get())


def test_a_missing_write_grant_is_a_500_naming_topic_and_operation() -> None:
    before = _count("TOPIC_AUTHORIZATION_FAILED")
    status, headers, body = _answer(FakeProducer(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert status == 500 and "retry-after" not in headers, (status, headers)
    assert body["detail"] == (
        "refused by Kafka (not an outage; retrying will not help): streamscore-api is not "
        f"allowed to Write topic {TOPIC} (TOPIC_AUTHORIZATION_FAILED)"
    )
    assert (body["topic"], body["operation"], body["accepted_event_ids"]) == (TOPIC, "Write", [])
    assert _count("TOPIC_AUTHORIZATION_FAILED") == before + 1


def test_a_deleted_topic_is_a_500_whether_the_broker_or_the_client_says_so() -> None:
    for error, code in (
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "UNKNOWN_TOPIC_OR_PART"),
        (KafkaError(KafkaError._UNKNOWN_TOPIC), "_UNKNOWN_TOPIC"),
    ):
        for producer in (FakeProducer(error), FakeProducer(raises=error)):
            status, headers, body = _answer(producer)
            assert status == 500 and "retry-after" not in headers, (status, headers)
            assert f"topic {TOPIC} does not exist" in body["detail"]
            assert f"Write refused ({code})" in body["detail"]


def test_an_outage_stays_a_503_with_retry_after() -> None:
    status, headers, body = _answer(FakeProducer(KafkaError(KafkaError._MSG_TIMED_OUT)))
    assert (status, headers["retry-after"]) == (503, "1")
    assert body["detail"].startswith("not all events were accepted by Kafka: ")
