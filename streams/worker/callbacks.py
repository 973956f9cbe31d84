"""Delivery callbacks of the worker's outputs: best effort (shadow scores, drift signals), and
a dead letter's, which writes it again without its original when the broker refuses its size;
and what a callback gets for a message the client refused outright."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from confluent_kafka import KafkaError

from services.core import metrics
from services.core.records import DeadLetterOut
from services.kafka.topics import TopicSpec

logger = logging.getLogger("streams.worker")


class Rescuer(Protocol):
    """Who writes a dead letter again without its original (the worker's outputs)."""

    dlq_topic: TopicSpec

    def rescue_dead_letter(self, letter: DeadLetterOut) -> KafkaError | None: ...


class BestEffort:
    """Delivery callback of an output that must not hold back commits: a failure is counted,
    and logged at most every ``LOG_EVERY_SECONDS`` per topic (a dead topic fails them all)."""

    __slots__ = ("topic", "_logged_at")
    LOG_EVERY_SECONDS = 10.0

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._logged_at = -self.LOG_EVERY_SECONDS

    def __call__(self, err: KafkaError | None, _msg: Any = None) -> None:
        if err is not None:
            metrics.PUBLISH_FAILURES.labels(topic=self.topic).inc()
            now = time.monotonic()
            if now - self._logged_at >= self.LOG_EVERY_SECONDS:
                self._logged_at = now
                logger.warning("best-effort output to %s not delivered: %s", self.topic, err)


# The broker or the client refuses a message for its size with one of these.
TOO_LARGE = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
}


class LetterDelivery:
    """Delivery callback of one dead letter. Refused for its size (the topic's own
    ``max.message.bytes`` is below ours, or a batch it rode in was), it is written again
    without the original, alone, on the rescue producer; anything else, or a refusal of that
    too, is the chunk's failure (the worker stops, uncommitted)."""

    __slots__ = ("outputs", "letter", "ack")

    def __init__(self, outputs: Rescuer, letter: DeadLetterOut, ack: Any) -> None:
        self.outputs, self.letter, self.ack = outputs, letter, ack

    def __call__(self, err: KafkaError | None, _msg: Any = None) -> None:
        if err is None or err.code() not in TOO_LARGE:
            self.ack(err, _msg)
            return
        metrics.DEAD_LETTERS_CUT.inc()
        logger.warning(
            "dead letter refused by %s (%s): written again without the original",
            self.outputs.dlq_topic.name,
            err.name(),
            extra={"topic": self.letter.source.topic, "offset": self.letter.source.offset},
        )
        self.ack(self.outputs.rescue_dead_letter(self.letter), None)


class Unsent:
    """What a delivery callback gets for a message the client refused in `produce` itself (no
    message exists): its topic, so that the failure names the output topic, not the input
    (a revoked Write on the predictions topic makes librdkafka refuse every later produce)."""

    __slots__ = ("_topic",)

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic
