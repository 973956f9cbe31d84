"""The scoring worker: the imperative shell around ``services.scoring.pipeline.process_batch``.

consume(n) → process the batch (decode, validate, one Redis round trip, one predict) → produce
predictions and dead letters → wait for every acknowledgement → commit. Nothing is committed that
was not delivered, so a crash means redelivery (same prediction ids), never loss.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, PublishError
from services.core.settings import Settings
from services.drift.monitor import DriftMonitor
from services.drift.signals import drift_signal
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.kafka.config import consumer_config, producer_config
from services.kafka.offsets import next_offsets
from services.kafka.topics import TopicSpec
from services.labels.store import PredictionStore, Stored
from services.ratelimit.bucket import Limiter
from services.scoring.model import LoadedModel
from services.scoring.pipeline import (
    BatchResult,
    Inbound,
    PredictionOut,
    dead_letter_headers,
    dead_letter_record,
    process_batch,
)
from services.scoring.serving import Serving
from services.validation.rules import RecordRules
from streams.model_watcher import ModelWatcher, publish_serving_info

logger = logging.getLogger(__name__)
FEATURE_RETRIES = 5
JOIN_GRACE_SECONDS = 30.0  # how long --timeout waits for a first partition assignment
LAG_SAMPLE_SECONDS = 5.0


@dataclass
class WorkerSummary:
    """What a bounded run did; the same numbers are in the Prometheus counters."""

    consumed: int = 0
    predictions: int = 0
    dead_letters: int = 0
    batches: int = 0
    degraded_batches: int = 0
    swaps: int = 0  # serving-set changes applied between batches
    shadow_predictions: int = 0
    deferred: int = 0  # backpressure: messages re-read later (not yet counted as consumed)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "predictions": self.predictions,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "degraded_batches": self.degraded_batches,
            "swaps": self.swaps,
            "shadow_predictions": self.shadow_predictions,
            "deferred": self.deferred,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ScoringWorker:
    """One scoring process; several share the input's partitions through the consumer group."""

    def __init__(
        self,
        settings: Settings,
        *,
        input_topic: TopicSpec,
        predictions_topic: TopicSpec,
        dlq_topic: TopicSpec,
        codecs: tuple[AvroCodec, AvroCodec, AvroCodec],
        rules: RecordRules,
        spec: FeatureSpec,
        store: FeatureStore,
        model: Serving | LoadedModel,
        limiter: Limiter | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        watcher: ModelWatcher | None = None,
        shadow_topic: TopicSpec | None = None,
        drift: tuple[DriftMonitor, TopicSpec, AvroCodec] | None = None,
        predictions_store: PredictionStore | None = None,
    ) -> None:
        self.settings = settings
        self.input_topic, self.predictions_topic, self.dlq_topic = (
            input_topic,
            predictions_topic,
            dlq_topic,
        )
        self.codec_in, self.codec_out, self.codec_dlq = codecs
        self.rules, self.spec, self.store = rules, spec, store
        self.serving = model if isinstance(model, Serving) else Serving(model)
        self.watcher = watcher
        self.shadow_topic = shadow_topic
        self.drift = drift
        self.predictions_store = predictions_store
        self.clock_ms = clock_ms
        self.limiter = limiter
        self.worker_id = settings.worker.worker_id or default_worker_id()
        self._stopping = False
        self.last_loop = time.monotonic()  # liveness: /healthz fails when this gets old
        self._next_lag_sample = 0.0
        self._assigned_at: float | None = None
        self._paused: dict[tuple[str, int], float] = {}
        self._consumer = Consumer(consumer_config(settings, settings.worker.scoring_group))
        self._producer = Producer(producer_config(settings))
        publish_serving_info(self.serving, None)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            try:
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    def _sample_lag(self) -> None:
        """Consumer lag per assigned partition, from the client's cached high watermarks (no
        broker round trip), at most every few seconds."""
        now = time.monotonic()
        if now < self._next_lag_sample:
            return
        self._next_lag_sample = now + LAG_SAMPLE_SECONDS
        assigned = self._consumer.assignment()
        if not assigned:
            return
        for tp in self._consumer.position(assigned):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or tp.offset < 0:
                continue  # not known yet (nothing fetched, or no position)
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(0, high - tp.offset)
            )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_at = time.monotonic()
        logger.info(
            "partitions assigned: %s",
            ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none",
        )

    def request_stop(self, *_: object) -> None:
        """Finish the batch in hand, flush, commit, and leave (SIGTERM/SIGINT handler)."""
        self._stopping = True

    def run(
        self, max_events: int | None = None, idle_timeout: float | None = None
    ) -> WorkerSummary:
        """Score until stopped, ``max_events`` inputs are committed, or nothing came for
        ``idle_timeout`` seconds."""
        summary = WorkerSummary()
        started = last_message = time.monotonic()
        self._consumer.subscribe(
            [self.input_topic.name], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        logger.info(
            "scoring worker %s started: %s -> %s, model %s: %s",
            self.worker_id,
            self.input_topic.name,
            self.predictions_topic.name,
            self.serving.champion.name,
            self.serving.describe(),
        )
        if self.watcher is not None:
            self.watcher.start()
        try:
            while not self._stopping:
                self.last_loop = time.monotonic()
                metrics.WORKER_UP.set(time.time())
                self._maybe_swap(summary)
                self._sample_lag()
                want = self.settings.batch.max_messages
                if max_events is not None:
                    if summary.consumed >= max_events:
                        break
                    want = min(want, max_events - summary.consumed)
                self._resume_due()
                messages = self._consume(want)
                if not messages:
                    # Idle time counts from the last message or the last assignment, so a slow
                    # group join (a dead member's session must expire first) is not "idle".
                    since = time.monotonic() - max(last_message, self._assigned_at or started)
                    grace = 0.0 if self._assigned_at else JOIN_GRACE_SECONDS
                    if (
                        idle_timeout is not None
                        and since > idle_timeout + grace
                        and not self._paused
                    ):
                        break
                    continue
                last_message = time.monotonic()
                if logger.isEnabledFor(logging.DEBUG):
                    lag_ms = int(time.time() * 1000) - min(m.timestamp()[1] for m in messages)
                    logger.debug("batch of %d, oldest produced %d ms ago", len(messages), lag_ms)
                self._handle(messages, summary)
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            summary.elapsed_seconds = time.monotonic() - started
            self._producer.flush(30)
            self._consumer.close()
            logger.info("scoring worker %s stopped: %s", self.worker_id, summary.to_dict())
        return summary

    def _consume(self, n: int) -> list[Message]:
        batch = self._consumer.consume(num_messages=n, timeout=self.settings.batch.timeout_seconds)
        out = []
        for m in batch:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("consume error: %s", err)
        return out

    def _handle(self, messages: list[Message], summary: WorkerSummary) -> None:
        inbound = [
            Inbound(
                m.topic() or "",
                m.partition() or 0,
                m.offset() or 0,
                _as_bytes(m.key()),
                _as_bytes(m.value()),
                _headers(m),
            )
            for m in messages
        ]
        metrics.MESSAGES_CONSUMED.labels(topic=self.input_topic.name).inc(len(inbound))
        metrics.BATCH_MESSAGES.observe(len(inbound))
        with metrics.STAGE_DURATION.labels(stage="process").time():
            result = self._process_with_retry(inbound)
        with metrics.STAGE_DURATION.labels(stage="drift").time():
            signals = self._watch(result)
        with metrics.STAGE_DURATION.labels(stage="publish").time():
            self._publish(result, signals)
        with metrics.STAGE_DURATION.labels(stage="remember").time():
            self._remember(result)
        deferred = {(d.topic, d.partition, d.offset) for d in result.deferred}
        with metrics.STAGE_DURATION.labels(stage="commit").time():
            self._commit(
                [m for m in messages if (m.topic(), m.partition(), m.offset()) not in deferred]
            )
        if result.deferred:
            self._hold_back(result.deferred)
        summary.deferred += len(result.deferred)
        summary.consumed += len(inbound) - len(result.deferred)
        summary.predictions += len(result.predictions)
        summary.dead_letters += len(result.dead_letters)
        summary.shadow_predictions += len(result.shadow) if self.shadow_topic else 0
        summary.batches += 1
        summary.degraded_batches += int(result.degraded)
        for letter in result.dead_letters:
            summary.rejected_by_reason[letter.rejected.reason.value] += 1

    def _process_with_retry(self, inbound: list[Inbound]) -> BatchResult:
        delay = 0.2
        for attempt in range(1, FEATURE_RETRIES + 1):
            try:
                result = process_batch(
                    inbound,
                    self.codec_in,
                    self.rules,
                    self.spec,
                    self.store.get_many,
                    self.serving,
                    self.clock_ms(),
                    self.limiter,
                    self.settings.rate_limit.policy == "backpressure",
                    self.settings.model.decision_threshold,
                )
            except FeatureStoreUnavailable as exc:
                metrics.FEATURE_LOOKUPS.labels(outcome="error").inc()
                if attempt == FEATURE_RETRIES:
                    raise
                logger.warning("feature store unavailable (attempt %d): %s", attempt, exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for group, n in result.missing.items():
                metrics.FEATURE_LOOKUPS.labels(outcome=f"missing_{group}").inc(n)
            if result.predictions:
                metrics.FEATURE_LOOKUPS.labels(outcome="batch_ok").inc()
            for reason, n in result.fallbacks.items():
                metrics.FALLBACKS.labels(reason=reason).inc(n)
            if result.agreement is not None and result.agreement.n:
                a = result.agreement
                metrics.SHADOW_COMPARED.inc(a.n)
                metrics.SHADOW_ABS_DIFF.inc(a.mean_abs_diff * a.n)
                metrics.SHADOW_DECISION_FLIPS.inc(a.decision_flips)
                if a.rank_correlation == a.rank_correlation:  # not NaN
                    metrics.SHADOW_RANK_CORRELATION.set(a.rank_correlation)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _remember(self, result: BatchResult) -> None:
        """Keep served and shadow scores for the label join. Best effort: losing them costs
        online quality figures, never predictions, so a Redis error is counted, not raised."""
        store = self.predictions_store
        if store is None or not result.predictions:
            return
        try:
            for kind, preds in (("served", result.predictions), ("shadow", result.shadow)):
                store.put_many(
                    kind,
                    (
                        (
                            p.record["event_id"],
                            Stored(
                                p.record["model_version"], p.record["variant"], p.record["score"]
                            ),
                        )
                        for p in preds
                    ),
                )
        except FeatureStoreUnavailable as exc:
            metrics.FEATURE_LOOKUPS.labels(outcome="prediction_store_error").inc()
            logger.warning("predictions not stored for the label join: %s", exc)

    def _watch(self, result: BatchResult) -> list[dict[str, Any]]:
        """Feed served scores and watched fields to the drift monitors, per partition."""
        if self.drift is None or not result.predictions:
            return []
        monitor, topic, _codec = self.drift
        by_partition: dict[int, list[PredictionOut]] = {}
        for p in result.predictions:
            by_partition.setdefault(p.source.partition, []).append(p)
        signals = []
        now = self.clock_ms()
        version = self.serving.champion.version
        for partition, preds in by_partition.items():
            offsets = [p.source.offset for p in preds]
            times = [p.record["event_time"] for p in preds]
            # Only the champion's scores: a canary's are another model's by design.
            watched = {
                "score": [
                    p.record["score"] if p.record["variant"] == "champion" else float("nan")
                    for p in preds
                ]
            }
            for name in self.settings.drift.features:
                watched[f"feature:{name}"] = [_number((p.event or {}).get(name)) for p in preds]
            for signal, values in watched.items():
                evidence = monitor.observe(partition, signal, values, offsets, times)
                if evidence is not None:
                    record = drift_signal(
                        evidence, self.input_topic.name, self.serving.champion.name, version, now
                    )
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
                        extra={"topic": topic.name, "partition": partition, "stage": "drift"},
                    )
        return signals

    def _publish(self, result: BatchResult, signals: list[dict[str, Any]] | None = None) -> None:
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        now = self.clock_ms()
        preds = self.codec_out.encode_many([p.record for p in result.predictions])
        for p, value in zip(result.predictions, preds, strict=True):
            self._producer.produce(
                self.predictions_topic.name, key=p.source.key, value=value, on_delivery=on_delivery
            )
        shadow = self.codec_out.encode_many([p.record for p in result.shadow])
        if shadow and self.shadow_topic is not None:
            for p, value in zip(result.shadow, shadow, strict=True):
                self._producer.produce(
                    self.shadow_topic.name, key=p.source.key, value=value, on_delivery=on_delivery
                )
        letters = self.codec_dlq.encode_many(
            [dead_letter_record(d, self.worker_id, now) for d in result.dead_letters]
        )
        for d, value in zip(result.dead_letters, letters, strict=True):
            self._producer.produce(
                self.dlq_topic.name,
                key=d.source.key,
                value=value,
                headers=dead_letter_headers(d),
                on_delivery=on_delivery,
            )
            metrics.MESSAGES_REJECTED.labels(
                stage=d.rejected.stage.value, reason=d.rejected.reason.value
            ).inc()
            if logger.isEnabledFor(logging.DEBUG):  # coordinates and reason only, no payload
                logger.debug(
                    "dead letter: %s",
                    d.rejected.reason.value,
                    extra={
                        "topic": d.source.topic,
                        "partition": d.source.partition,
                        "offset": d.source.offset,
                        "stage": d.rejected.stage.value,
                        "reason": d.rejected.reason.value,
                    },
                )
        if signals and self.drift is not None:
            _monitor, topic, codec = self.drift
            for record, value in zip(signals, codec.encode_many(signals), strict=True):
                self._producer.produce(
                    topic.name,
                    key=record["signal"].encode(),
                    value=value,
                    on_delivery=on_delivery,
                )
        remaining = self._producer.flush(30)
        if failures or remaining:
            raise PublishError(
                f"{len(failures)} deliveries failed, {remaining} unacknowledged: "
                f"{failures[:3]}; offsets not committed",
                topic=self.predictions_topic.name,
            )
        metrics.MESSAGES_PRODUCED.labels(topic=self.predictions_topic.name).inc(len(preds))
        metrics.MESSAGES_PRODUCED.labels(topic=self.dlq_topic.name).inc(len(letters))
        acked = time.time()
        for p in result.predictions:
            metrics.EVENT_TO_PREDICTION.observe(max(0.0, acked - p.record["event_time"] / 1000))
        served = Counter(
            (p.record["model_version"], p.record["variant"]) for p in result.predictions
        )
        for (version, variant), n in served.items():
            metrics.PREDICTIONS.labels(model_version=version, variant=variant).inc(n)
        if result.shadow and self.shadow_topic is not None:
            metrics.MESSAGES_PRODUCED.labels(topic=self.shadow_topic.name).inc(len(shadow))
            metrics.PREDICTIONS.labels(
                model_version=result.shadow[0].record["model_version"], variant="shadow"
            ).inc(len(shadow))

    def _maybe_swap(self, summary: WorkerSummary) -> None:
        """Between batches only: every prediction of a batch comes from one serving set."""
        if self.watcher is None:
            return
        new = self.watcher.take()
        if new is None:
            return
        logger.info(
            "swapped to %s (was %s)",
            new.describe(),
            self.serving.describe(),
            extra={"model_version": new.champion.version, "component": "model"},
        )
        publish_serving_info(new, self.serving)
        if self.drift is not None and new.champion.version != self.serving.champion.version:
            self.drift[0].reset("score")
        self.serving = new
        summary.swaps += 1
        metrics.MODEL_SWAPS.inc()

    def _hold_back(self, deferred: list[Inbound]) -> None:
        """Backpressure: rewind each throttled partition to its first deferred message and pause
        it; ``_resume_due`` lets it go again once the pause is over."""
        first: dict[tuple[str, int], int] = {}
        for d in deferred:
            key = (d.topic, d.partition)
            first[key] = min(first.get(key, d.offset), d.offset)
        parts = [TopicPartition(t, p, o) for (t, p), o in first.items()]
        self._consumer.pause(parts)
        for tp in parts:
            self._consumer.seek(tp)
        until = time.monotonic() + self.settings.rate_limit.pause_seconds
        for t, p in first:
            self._paused[(t, p)] = until
        metrics.MESSAGES_DEFERRED.inc(len(deferred))

    def _resume_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, until in self._paused.items() if until <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._paused[tp]

    def _commit(self, messages: list[Message]) -> None:
        offsets = next_offsets(messages)
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)


def _number(value: Any) -> float:
    """A watched field as a float; missing or non-numeric is NaN (skipped by the monitor)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(m: Message) -> tuple[tuple[str, bytes | None], ...]:
    raw = m.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), _as_bytes(v)) for k, v in items)
