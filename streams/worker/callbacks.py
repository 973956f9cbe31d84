"""Delivery callbacks of the worker's outputs: best effort (shadow scores, drift signals), and
a dead letter's, which writes it again without its original when the broker refuses its size;
and what a callback gets for a message the client refused outright."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.records import DeadLetterOut
from services.dlq.letter import dead_letter_headers, encode_cut, encode_dead_letters
from services.kafka.topics import TopicSpec

logger = logging.getLogger("streams.worker")


class Rescuer(Protocol):
    """Who writes a dead letter again without its original (the worker's outputs)."""

    dlq_topic: TopicSpec
    codec_dlq: AvroCodec
    producer: Producer
    worker_id: str
    now_ms: int
    dead_letter_max_bytes: int
    cuts: SizeCuts | None  # exactly_once: letters to write cut, in the batch's transaction

    def rescue_dead_letter(self, letter: DeadLetterOut) -> KafkaError | None: ...


Where = tuple[str, int, int]  # a dead letter's input: topic, partition, offset


class SizeCuts:
    """Under exactly_once, how large a dead letter its topic takes: letters at least as large
    as one it refused are written cut (reason kept, original dropped and marked, as the
    at-least-once rescue writes them), inside the batch's transaction.

    The rescue of at-least-once writes a refused letter again on a producer of its own,
    outside any transaction: under exactly_once that letter would be visible while its batch
    is aborted (the broker's refusal fails the whole transaction) and read again, and the batch
    would fail the same way each time until the worker stops. Instead the refused size is
    noted, the transaction aborts, and the batch, read again from its commit, writes its large
    letters cut. The aborts until the next commit are ours to mend (``pending``): the reports
    of the outputs purged with them stop nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # delivery reports come on the transaction's thread
        self.limit: int | None = None  # the smallest letter (value bytes) the topic refused
        self.pending = False  # refused since the last commit: the next aborts are mended
        self._cut_now: set[Where] = set()  # the letters of the batch in hand written cut

    @staticmethod
    def where(letter: DeadLetterOut) -> Where:
        s = letter.source
        return s.topic, s.partition, s.offset

    def was_cut(self, letter: DeadLetterOut) -> bool:
        """Whether ``letter`` was written cut already (a refusal of it is then a failure)."""
        with self._lock:
            return self.where(letter) in self._cut_now

    def refused(self, size: int) -> None:
        """The broker refused a letter of ``size`` value bytes: the transaction will abort.
        The limit lasts as long as the process (a topic's limit raised later keeps letters
        cut until the worker restarts)."""
        with self._lock:
            self.limit = size if self.limit is None else min(self.limit, size)
            self.pending = True

    def committed(self) -> None:
        with self._lock:
            self.pending = False

    def encode(
        self,
        codec: AvroCodec,
        letters: Sequence[DeadLetterOut],
        worker_id: str,
        now_ms: int,
        max_bytes: int,
    ) -> list[bytes]:
        """``encode_dead_letters``, with the letters the topic would refuse written cut."""
        out = encode_dead_letters(codec, letters, worker_id, now_ms, max_bytes)
        cut_now: set[Where] = set()
        limit = self.limit
        if limit is not None:
            for i, value in enumerate(out):
                if len(value) >= limit:
                    out[i] = encode_cut(codec, letters[i], worker_id, now_ms, max_bytes)
                    cut_now.add(self.where(letters[i]))
            metrics.DEAD_LETTERS_CUT.inc(len(cut_now))
        with self._lock:
            self._cut_now = cut_now
        return out


def write_cut(outputs: Rescuer, letter: DeadLetterOut, ack: Any) -> None:
    """Write ``letter`` cut on the outputs' own producer (under exactly_once: in the batch's
    transaction), reporting to ``ack``; a refusal of that too is the chunk's failure."""
    value = encode_cut(
        outputs.codec_dlq, letter, outputs.worker_id, outputs.now_ms, outputs.dead_letter_max_bytes
    )
    try:
        outputs.producer.produce(
            outputs.dlq_topic.name,
            value,
            None,
            headers=dead_letter_headers(letter),
            on_delivery=ack,
        )
    except KafkaException as exc:
        ack(exc.args[0], Unsent(outputs.dlq_topic.name))
    except BufferError:
        ack(KafkaError(KafkaError._QUEUE_FULL), Unsent(outputs.dlq_topic.name))


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
        cuts = self.outputs.cuts
        if cuts is not None:
            self._in_transaction(cuts, err, _msg)
            return
        metrics.DEAD_LETTERS_CUT.inc()
        logger.warning(
            "dead letter refused by %s (%s): written again without the original",
            self.outputs.dlq_topic.name,
            err.name(),
            extra={"topic": self.letter.source.topic, "offset": self.letter.source.offset},
        )
        self.ack(self.outputs.rescue_dead_letter(self.letter), None)

    def _in_transaction(self, cuts: SizeCuts, err: KafkaError, msg: Any) -> None:
        """exactly_once: refused by the client in produce() (it never entered the
        transaction), the letter is written cut now, in it; refused by the broker (the
        transaction must abort), its size is noted, and the batch, read again, writes the
        letters that large cut. Refused though already cut: the batch's failure."""
        if cuts.was_cut(self.letter):
            self.ack(err, msg)
            return
        client = isinstance(msg, Unsent)
        logger.warning(
            "dead letter refused by %s (%s): %s without the original",
            self.outputs.dlq_topic.name,
            err.name(),
            "written again"
            if client
            else "the batch is aborted and its large dead letters written",
            extra={"topic": self.letter.source.topic, "offset": self.letter.source.offset},
        )
        if client:
            metrics.DEAD_LETTERS_CUT.inc()
            write_cut(self.outputs, self.letter, self.ack)
        else:
            # A report without the message (never seen): every letter is written cut.
            cuts.refused(msg.len() or 0 if msg is not None and hasattr(msg, "len") else 0)


class Unsent:
    """What a delivery callback gets for a message the client refused in `produce` itself (no
    message exists): its topic, so that the failure names the output topic, not the input
    (a revoked Write on the predictions topic makes librdkafka refuse every later produce)."""

    __slots__ = ("_topic",)

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic
