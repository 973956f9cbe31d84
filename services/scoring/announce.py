"""Announce a registry change on the model-events topic (workers react within a second)."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.codec.avro import AvroCodec
from services.core.settings import Settings
from services.kafka.config import producer_config

logger = logging.getLogger(__name__)


def send_one(settings: Settings, topic: str, key: bytes, value: bytes) -> str | None:
    """Produce one message and wait for the broker's acknowledgement (at most ~15 s); returns
    None when delivered, else why not."""
    return send_all(settings, topic, [(key, value, [])])


def send_all(
    settings: Settings,
    topic: str,
    messages: list[tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]],
) -> str | None:
    """Produce (key, value, headers) messages and wait for every acknowledgement (at most
    ~15 s); returns None when all were delivered, else the first reason one was not."""
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer = Producer(producer_config(settings, **{"message.timeout.ms": 10_000}))
        for key, value, headers in messages:
            producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        if producer.flush(15) != 0:
            errors.append("not acknowledged within 15 s")
    except (KafkaException, BufferError) as exc:
        errors.append(str(exc))
    return errors[0] if errors else None


def announce(settings: Settings, codec: AvroCodec, event: dict[str, Any]) -> str | None:
    """Publish ``event``; returns None when delivered, else why not.

    A failed announce is not fatal: the registry already holds the change, and workers poll it
    every ``model.poll_seconds``.
    """
    topic, key = settings.topics.model_events, event["model_name"].encode()
    problem = send_one(settings, topic, key, codec.encode_one(event))
    if problem is not None:
        logger.warning("model event not announced (%s); workers will poll", problem)
    return problem
