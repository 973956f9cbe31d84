"""What the scoring worker writes for a batch: predictions, dead letters, shadow scores and
drift signals; produced without waiting, tracked per partition chunk.

Predictions and dead letters carry their chunk's ``ack`` as delivery callback, so the commit
position follows Kafka's acknowledgements. Shadow predictions and drift signals are best effort:
a failed delivery is counted and logged, and never holds back serving or commits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Producer

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import PublishError
from services.core.records import DeadLetterOut, Inbound, first_offsets
from services.core.settings import Settings
from services.dlq.letter import (
    dead_letter_headers,
    dead_letter_key,
    encode_cut,
    encode_dead_letters,
)
from services.kafka.config import producer_config
from services.kafka.topics import TopicSpec
from services.kafka.tracker import Chunk, DeliveryTracker
from services.scoring.results import BatchResult
from streams.worker.callbacks import BestEffort, LetterDelivery, SizeCuts, Unsent
from streams.worker.parts import DriftOutput, FeatureLogOutput, WorkerTopics

# The worker's own logger: dead letters and delivery failures are the worker's log lines.
logger = logging.getLogger("streams.worker")
BUFFER_FULL_WAIT_SECONDS = 60.0
RESCUE_WAIT_SECONDS = 30.0


@dataclass(slots=True)
class _Sent:
    """A chunk's payload: what to count once Kafka acknowledged all of it."""

    predictions: int
    dead_letters: int
    event_times_ms: list[int]


class Outputs:
    """Produces a batch's outputs on one producer and opens their chunks on the tracker."""

    def __init__(
        self,
        producer: Producer,
        tracker: DeliveryTracker,
        worker_id: str,
        *,
        predictions: tuple[TopicSpec, AvroCodec],
        dead_letters: tuple[TopicSpec, AvroCodec],
        shadow: TopicSpec | None,
        drift: tuple[TopicSpec, AvroCodec] | None,
        dead_letter_max_bytes: int = 1_000_000,
        beat: Callable[[], None] = lambda: None,
        rescue_producer: Callable[[], Producer] | None = None,
        side_producer: Producer | None = None,
        feature_log: FeatureLogOutput | None = None,
        transactional: bool = False,
    ) -> None:
        """``beat``: liveness, called while a full queue is waited on. ``rescue_producer``:
        builds the producer that writes dead letters again without their original (small
        batches); the main producer when not given. ``side_producer``: the best-effort
        outputs' own (shadow scores, drift signals), so that a topic of theirs that cannot be
        written never fills the queue predictions wait in."""
        self.producer, self.tracker, self.worker_id = producer, tracker, worker_id
        self.side = side_producer or producer
        self.predictions_topic, self.codec_out = predictions
        self.dlq_topic, self.codec_dlq = dead_letters
        self.shadow_topic = shadow
        self.drift = drift
        self._shadow_cb = BestEffort(shadow.name) if shadow else None
        self._drift_cb = BestEffort(drift[0].name) if drift else None
        self.feature_log = feature_log  # best effort: training falls back where it lacks rows
        self._log_cb = BestEffort(feature_log.topic.name) if feature_log else None
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.beat = beat
        self.now_ms = 0
        self._rescue: Producer | None = None
        self._make_rescue = rescue_producer or (lambda: producer)
        self.cuts = SizeCuts() if transactional else None  # letters refused in a transaction

    @classmethod
    def for_worker(
        cls,
        settings: Settings,
        producer: Producer,
        tracker: DeliveryTracker,
        worker_id: str,
        topics: WorkerTopics,
        codecs: tuple[AvroCodec, AvroCodec],
        drift: DriftOutput | None,
        *,
        beat: Callable[[], None],
    ) -> Outputs:
        """A scoring worker's outputs. Dead letters refused for their size are written again
        alone, on a producer whose batches stay well under any topic's max.message.bytes."""
        return cls(
            producer,
            tracker,
            worker_id,
            predictions=(topics.predictions, codecs[0]),
            dead_letters=(topics.dead_letters, codecs[1]),
            shadow=topics.shadow,
            drift=(drift.topic, drift.codec) if drift is not None else None,
            dead_letter_max_bytes=settings.batch.dead_letter_max_bytes,
            beat=beat,
            rescue_producer=lambda: Producer(
                producer_config(settings, **{"batch.size": 4096, "linger.ms": 0})
            ),
            side_producer=Producer(
                producer_config(settings, **{"linger.ms": settings.kafka.side_linger_ms})
            ),
            feature_log=topics.feature_log,
            transactional=settings.worker.processing_guarantee == "exactly_once",
        )

    def _send_side(self, topic: str, value: bytes, key: bytes | None, callback: Any) -> None:
        """A best-effort output: never waits; a full queue or a refusal drops it, counted."""
        try:
            self.side.produce(topic, value, key, on_delivery=callback)
        except BufferError:
            callback(KafkaError(KafkaError._QUEUE_FULL), None)
        except KafkaException as exc:
            callback(exc.args[0], None)

    def poll_side(self, flush_seconds: float | None = None) -> None:
        """Serve the best-effort outputs' delivery reports (or flush them, bounded)."""
        if self.side is self.producer:
            return
        if flush_seconds is None:
            self.side.poll(0)
        else:
            self.side.flush(flush_seconds)

    def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        on_delivery: Any,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """One produce; a full local queue waits for the broker (bounded), and a message the
        client refuses outright is reported to its callback as a failed delivery."""
        deadline = None
        while True:
            try:
                if headers is None:
                    self.producer.produce(topic, value, key, on_delivery=on_delivery)
                else:
                    self.producer.produce(
                        topic, value, key, headers=headers, on_delivery=on_delivery
                    )
                return
            except BufferError:
                deadline = deadline or time.monotonic() + BUFFER_FULL_WAIT_SECONDS
                if time.monotonic() > deadline:
                    raise PublishError(
                        "producer queue full for 60 s: the broker is not taking writes",
                        topic=topic,
                        stage="publish",
                    ) from None
                self.producer.poll(0.05)
                self.beat()
            except KafkaException as exc:
                on_delivery(exc.args[0], Unsent(topic))
                return

    def publish(
        self,
        inbound: Sequence[Inbound],
        result: BatchResult,
        signals: Sequence[dict[str, Any]],
        now_ms: int,
    ) -> None:
        chunks = self._open_chunks(inbound, result)
        send = self._send
        served = result.served
        if served is not None:
            topic = self.predictions_topic.name
            values = self.codec_out.encode_columns(served.columns(), len(served))
            for src, value in zip(served.sources, values, strict=True):
                send(topic, value, src.key, chunks[(src.topic, src.partition)].ack)
        shadow = result.shadowed
        if shadow is not None and self.shadow_topic is not None:
            values = self.codec_out.encode_columns(shadow.columns(), len(shadow))
            for src, value in zip(shadow.sources, values, strict=True):
                self._send_side(self.shadow_topic.name, value, src.key, self._shadow_cb)
            metrics.MESSAGES_PRODUCED.labels(topic=self.shadow_topic.name).inc(len(values))
        if self.feature_log is not None:
            for value in self.feature_log.encode(result, now_ms):
                self._send_side(self.feature_log.topic.name, value, None, self._log_cb)
        if result.dead_letters:
            self.now_ms = now_ms
            cut = self.dead_letter_max_bytes
            encode = encode_dead_letters if self.cuts is None else self.cuts.encode
            letters = encode(self.codec_dlq, result.dead_letters, self.worker_id, now_ms, cut)
            for d, value in zip(result.dead_letters, letters, strict=True):
                src = d.source
                send(
                    self.dlq_topic.name,
                    value,
                    dead_letter_key(d),
                    LetterDelivery(self, d, chunks[(src.topic, src.partition)].ack),
                    dead_letter_headers(d),
                )
                if logger.isEnabledFor(logging.DEBUG):  # coordinates and reason only
                    logger.debug(
                        "dead letter: %s",
                        d.rejected.reason.value,
                        extra={
                            "topic": src.topic,
                            "partition": src.partition,
                            "offset": src.offset,
                            "stage": d.rejected.stage.value,
                            "reason": d.rejected.reason.value,
                        },
                    )
        self.publish_signals(signals)

    def rescue_dead_letter(self, letter: DeadLetterOut) -> KafkaError | None:
        """Write ``letter`` without its original on a producer of its own whose batches stay
        small (the topic's limit applies to a whole batch), and wait for the answer: the rare
        path, after a refusal for size. Returns the delivery error, None when written."""
        if self._rescue is None:
            self._rescue = self._make_rescue()
        value = encode_cut(
            self.codec_dlq, letter, self.worker_id, self.now_ms, self.dead_letter_max_bytes
        )
        answer: list[KafkaError | None] = []
        try:
            self._rescue.produce(
                self.dlq_topic.name,
                value,
                None,
                headers=dead_letter_headers(letter),
                on_delivery=lambda err, _msg: answer.append(err),
            )
        except KafkaException as exc:
            return exc.args[0]  # type: ignore[no-any-return]
        except BufferError:  # its queue is full: the letter fails, the worker stops uncommitted
            return KafkaError(KafkaError._QUEUE_FULL)
        self._rescue.flush(RESCUE_WAIT_SECONDS)
        return answer[0] if answer else KafkaError(KafkaError._MSG_TIMED_OUT)

    def publish_signals(self, signals: Sequence[dict[str, Any]]) -> None:
        """Drift signals: best effort, like shadow predictions."""
        if signals and self.drift is not None:
            topic_spec, codec = self.drift
            for record, value in zip(signals, codec.encode_many(list(signals)), strict=True):
                self._send_side(topic_spec.name, value, record["signal"].encode(), self._drift_cb)

    def _open_chunks(
        self, inbound: Sequence[Inbound], result: BatchResult
    ) -> dict[tuple[str, int], Chunk]:
        """One chunk per partition of the batch: its handled offsets (deferred ones excluded;
        they are a suffix per partition) and one output due per handled input."""
        first_deferred = first_offsets(result.deferred)
        span: dict[tuple[str, int], list[int]] = {}
        for m in inbound:
            key = (m.topic, m.partition)
            cut = first_deferred.get(key)
            if cut is not None and m.offset >= cut:
                continue
            bounds = span.get(key)
            if bounds is None:
                span[key] = [m.offset, m.offset + 1]
            else:
                bounds[1] = max(bounds[1], m.offset + 1)
        sent = {key: _Sent(0, 0, []) for key in span}
        if result.served is not None:
            times = result.served.field("event_time")
            for src, t in zip(result.served.sources, times, strict=True):
                counts = sent[(src.topic, src.partition)]
                counts.predictions += 1
                counts.event_times_ms.append(t)
        for letter in result.dead_letters:
            sent[(letter.source.topic, letter.source.partition)].dead_letters += 1
        return {
            key: self.tracker.open(
                key, first, end, sent[key].predictions + sent[key].dead_letters, sent[key]
            )
            for key, (first, end) in span.items()
        }

    def acknowledged(self, chunk: Chunk) -> None:
        """Count a chunk whose every output Kafka acknowledged."""
        sent: _Sent | None = chunk.payload
        if sent is None:
            return
        if sent.predictions:
            metrics.MESSAGES_PRODUCED.labels(topic=self.predictions_topic.name).inc(
                sent.predictions
            )
            acked = chunk.done_at if chunk.done_at is not None else time.time()
            latency = acked - np.asarray(sent.event_times_ms, dtype=np.float64) / 1000.0
            metrics.observe_many(metrics.EVENT_TO_PREDICTION, np.maximum(latency, 0.0))
        if sent.dead_letters:
            metrics.MESSAGES_PRODUCED.labels(topic=self.dlq_topic.name).inc(sent.dead_letters)
