"""What the scoring worker writes for a batch: predictions, dead letters, shadow scores, drift
signals and the prediction store; produced without waiting, tracked per partition chunk.

Predictions and dead letters carry their chunk's ``ack`` as delivery callback, so the commit
position follows Kafka's acknowledgements. Shadow predictions and drift signals are best effort:
a failed delivery is counted and logged, and never holds back serving or commits.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, KafkaException, Producer

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, PublishError
from services.dlq.letter import dead_letter_headers, dead_letter_key, dead_letter_record
from services.drift.monitor import DriftMonitor
from services.drift.signals import drift_signal
from services.kafka.topics import TopicSpec
from services.kafka.tracker import Chunk, DeliveryTracker
from services.labels.store import PredictionStore
from services.scoring.pipeline import BatchResult, DeadLetterOut, Inbound
from services.scoring.serving import Serving

# The worker's own logger: dead letters and delivery failures are the worker's log lines.
logger = logging.getLogger("streams.scoring_worker")
BUFFER_FULL_WAIT_SECONDS = 60.0
RESCUE_WAIT_SECONDS = 30.0


@dataclass(slots=True)
class _Sent:
    """A chunk's payload: what to count once Kafka acknowledged all of it."""

    predictions: int
    dead_letters: int
    event_times_ms: list[int]


class _BestEffort:
    """Delivery callback of an output that must not hold back commits."""

    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __call__(self, err: KafkaError | None, _msg: Any = None) -> None:
        if err is not None:
            metrics.PUBLISH_FAILURES.labels(topic=self.topic).inc()
            logger.warning("best-effort output to %s not delivered: %s", self.topic, err)


# The broker or the client refuses a message for its size with one of these.
_TOO_LARGE = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
}


class _LetterDelivery:
    """Delivery callback of one dead letter. Refused for its size (the topic's own
    ``max.message.bytes`` is below ours, or a batch it rode in was), it is written again
    without the original, alone, on the rescue producer; anything else, or a refusal of that
    too, is the chunk's failure (the worker stops, uncommitted)."""

    __slots__ = ("outputs", "letter", "ack")

    def __init__(self, outputs: Outputs, letter: DeadLetterOut, ack: Any) -> None:
        self.outputs, self.letter, self.ack = outputs, letter, ack

    def __call__(self, err: KafkaError | None, _msg: Any = None) -> None:
        if err is None or err.code() not in _TOO_LARGE:
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
    ) -> None:
        """``beat``: liveness, called while a full queue is waited on. ``rescue_producer``:
        builds the producer that writes dead letters again without their original (small
        batches); the main producer when not given."""
        self.producer, self.tracker, self.worker_id = producer, tracker, worker_id
        self.predictions_topic, self.codec_out = predictions
        self.dlq_topic, self.codec_dlq = dead_letters
        self.shadow_topic = shadow
        self.drift = drift
        self._shadow_cb = _BestEffort(shadow.name) if shadow else None
        self._drift_cb = _BestEffort(drift[0].name) if drift else None
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.beat = beat
        self._now_ms = 0
        self._rescue: Producer | None = None
        self._make_rescue = rescue_producer or (lambda: producer)

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
                on_delivery(exc.args[0], None)
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
            for (version, variant), n in Counter(
                zip(served.versions, served.variants, strict=True)
            ).items():
                metrics.PREDICTIONS.labels(model_version=version, variant=variant).inc(n)
        shadow = result.shadowed
        if shadow is not None and self.shadow_topic is not None:
            values = self.codec_out.encode_columns(shadow.columns(), len(shadow))
            for src, value in zip(shadow.sources, values, strict=True):
                send(self.shadow_topic.name, value, src.key, self._shadow_cb)
            metrics.MESSAGES_PRODUCED.labels(topic=self.shadow_topic.name).inc(len(values))
            metrics.PREDICTIONS.labels(model_version=shadow.versions[0], variant="shadow").inc(
                len(values)
            )
        if result.dead_letters:
            self._now_ms = now_ms
            cut = self.dead_letter_max_bytes
            letters = self.codec_dlq.encode_many(
                [dead_letter_record(d, self.worker_id, now_ms, cut) for d in result.dead_letters]
            )
            rejected: Counter[tuple[str, str]] = Counter()
            for d, value in zip(result.dead_letters, letters, strict=True):
                src = d.source
                send(
                    self.dlq_topic.name,
                    value,
                    dead_letter_key(d),
                    _LetterDelivery(self, d, chunks[(src.topic, src.partition)].ack),
                    dead_letter_headers(d),
                )
                rejected[(d.rejected.stage.value, d.rejected.reason.value)] += 1
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
            for (stage, reason), n in rejected.items():
                metrics.MESSAGES_REJECTED.labels(stage=stage, reason=reason).inc(n)
        self.publish_signals(signals)

    def rescue_dead_letter(self, letter: DeadLetterOut) -> KafkaError | None:
        """Write ``letter`` without its original on a producer of its own whose batches stay
        small (the topic's limit applies to a whole batch), and wait for the answer: the rare
        path, after a refusal for size. Returns the delivery error, None when written."""
        if self._rescue is None:
            self._rescue = self._make_rescue()
        record = dead_letter_record(
            letter, self.worker_id, self._now_ms, self.dead_letter_max_bytes, minimal=True
        )
        answer: list[KafkaError | None] = []
        try:
            self._rescue.produce(
                self.dlq_topic.name,
                self.codec_dlq.encode_one(record),
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
                self._send(topic_spec.name, value, record["signal"].encode(), self._drift_cb)

    def _open_chunks(
        self, inbound: Sequence[Inbound], result: BatchResult
    ) -> dict[tuple[str, int], Chunk]:
        """One chunk per partition of the batch: its handled offsets (deferred ones excluded;
        they are a suffix per partition) and one output due per handled input."""
        first_deferred: dict[tuple[str, int], int] = {}
        for d in result.deferred:
            key = (d.topic, d.partition)
            first_deferred[key] = min(first_deferred.get(key, d.offset), d.offset)
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


@dataclass(slots=True)
class _DriftRows:
    partitions: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    times: npt.NDArray[np.int64]
    watched: dict[str, npt.NDArray[np.float64]]


class DriftFeed:
    """The drift monitors' input, gathered over small batches.

    The detectors see the same values in the same order as batch by batch, but in pieces of at
    least ``min_rows`` (or whatever waited ``max_wait_seconds``): at light load a batch is one
    or two events, and numpy's fixed cost per call would otherwise be paid per event. The
    worker flushes before a model swap (the score detector restarts with a new champion).
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        features: Sequence[str],
        topic: str,
        min_rows: int = 256,
        max_wait_seconds: float = 1.0,
    ) -> None:
        self.monitor, self.features, self.topic = monitor, tuple(features), topic
        self.min_rows, self.max_wait = min_rows, max_wait_seconds
        self._pending: list[_DriftRows] = []
        self._rows = 0
        self._since = 0.0

    def add(self, result: BatchResult, now: float) -> None:
        block = result.served
        if block is None:
            return
        n = len(block)
        # Only the champion's scores: a canary's are another model's by design.
        champion = np.asarray([v == "champion" for v in block.variants], dtype=bool)
        watched = {"score": np.where(champion, block.scores, np.nan)}
        for name in self.features:
            watched[f"feature:{name}"] = _numbers(block.field(name))
        self._pending.append(
            _DriftRows(
                np.fromiter((m.partition for m in block.sources), np.int64, n),
                np.fromiter((m.offset for m in block.sources), np.int64, n),
                np.asarray(block.field("event_time"), dtype=np.int64),
                watched,
            )
        )
        if not self._rows:
            self._since = now
        self._rows += n

    def due(self, now: float) -> bool:
        return self._rows >= self.min_rows or (
            self._rows > 0 and now - self._since >= self.max_wait
        )

    def flush(self, serving: Serving, now_ms: int) -> list[dict[str, Any]]:
        """Feed what is pending, per partition; the DriftSignal records of detectors that
        fired."""
        if not self._pending:
            return []
        parts, self._pending, self._rows = self._pending, [], 0
        partitions = np.concatenate([p.partitions for p in parts])
        offsets = np.concatenate([p.offsets for p in parts])
        times = np.concatenate([p.times for p in parts])
        watched = {k: np.concatenate([p.watched[k] for p in parts]) for k in parts[0].watched}
        signals = []
        version = serving.champion.version
        for partition in np.unique(partitions).tolist():
            rows = partitions == partition
            offs, ts = offsets[rows].tolist(), times[rows].tolist()
            for signal, values in watched.items():
                evidence = self.monitor.observe(partition, signal, values[rows], offs, ts)
                if evidence is None:
                    continue
                record = drift_signal(evidence, self.topic, serving.champion.name, version, now_ms)
                signals.append(record)
                metrics.DRIFT_SIGNALS.labels(detector=evidence.detector, signal=signal).inc()
                logger.warning(
                    "drift on %s: %s mean %.4g -> %.4g (offsets %d-%d)",
                    signal,
                    evidence.detector,
                    evidence.stats_before.get("mean", float("nan")),
                    evidence.stats_after.get("mean", float("nan")),
                    evidence.offset_start,
                    evidence.offset_end,
                    extra={"topic": self.topic, "partition": partition, "stage": "drift"},
                )
        return signals


def remember(store: PredictionStore, result: BatchResult) -> None:
    """Keep served and shadow scores for the label join. Best effort: losing them costs online
    quality figures, never predictions, so a Redis error is counted, not raised."""
    try:
        for kind, block in (("served", result.served), ("shadow", result.shadowed)):
            if block is not None:
                store.put_columns(
                    kind,
                    block.field("event_id"),
                    block.versions,
                    block.variants,
                    block.scores,
                    block.degraded,
                    block.missing,
                )
    except FeatureStoreUnavailable as exc:
        metrics.FEATURE_LOOKUPS.labels(outcome="prediction_store_error").inc()
        logger.warning("predictions not stored for the label join: %s", exc)


def _numbers(values: list[Any]) -> npt.NDArray[np.float64]:
    """A watched field as floats, per batch; missing or non-numeric is NaN (skipped)."""
    if {type(v) for v in values} <= {int, float}:
        return np.asarray(values, dtype=np.float64)
    return np.fromiter((_number(v) for v in values), np.float64, len(values))


def _number(value: Any) -> float:
    """A watched field as a float; missing or non-numeric is NaN (skipped by the monitor)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)
