"""The HTTP API's answer to a send Kafka did not take: an outage (503 with ``Retry-After``: it
passes, the client sends again) or a refusal (500 without it: a missing Write grant, a deleted
topic; no retry helps until a person acts, and a 503 would have clients retry for ever)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from services.core import metrics
from services.core.settings import Settings
from services.kafka.denied import not_authorized, refusal

# librdkafka's words for a topic that is not there (deleted, or never created): by the broker,
# or by the client from the cluster's metadata.
_NO_TOPIC = {
    "UNKNOWN_TOPIC_OR_PART": ("UNKNOWN_TOPIC_OR_PART", "Unknown topic or partition"),
    "_UNKNOWN_TOPIC": ("_UNKNOWN_TOPIC", "Local: Unknown topic"),
}


def refused_send(settings: Settings, why: str, topic: str) -> tuple[str, str] | None:
    """``(code, line)`` when ``why`` (the first failure of a send) is a refusal to write
    ``topic``, else None (an outage: a timeout, a broker down).

    >>> s = Settings(kafka={"sasl_username": "streamscore-api"})
    >>> code, line = refused_send(s, 'KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29,'
    ...     'str="Broker: Topic authorization failed"}', "t.v1")
    >>> code, line[:47]
    ('TOPIC_AUTHORIZATION_FAILED', 'streamscore-api is not allowed to Write topic t')
    >>> refused_send(s, "Local: Unknown topic", "t.v1")[1]
    'topic t.v1 does not exist (deleted, or never created): Write refused (_UNKNOWN_TOPIC)'
    >>> refused_send(s, "the broker did not acknowledge in time", "t.v1") is None
    True
    """
    code = refusal(why)
    if code is not None:
        denied = not_authorized(settings, why, "Write", topic)
        return code, str(denied)
    for name, words in _NO_TOPIC.items():
        if any(w in why for w in words):
            return name, (
                f"topic {topic} does not exist (deleted, or never created): Write refused ({name})"
            )
    return None


def unsent(settings: Settings, topic: str, acked: list[str], why: str) -> JSONResponse:
    """The answer to a send of which only ``acked`` was written, for the reason ``why``.

    A refusal is counted in ``streamscore_kafka_refusals_total{operation,code}``."""
    refused = refused_send(settings, why, topic)
    if refused is None:
        return JSONResponse(
            {
                "detail": f"not all events were accepted by Kafka: {why}",
                "accepted_event_ids": acked,
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )
    code, line = refused
    metrics.KAFKA_REFUSALS.labels(operation="Write", code=code).inc()
    return JSONResponse(
        {
            "detail": f"refused by Kafka (not an outage; retrying will not help): {line}",
            "topic": topic,
            "operation": "Write",
            "accepted_event_ids": acked,
        },
        status_code=500,
    )
