"""The scoring worker: the imperative shell around ``services.scoring.pipeline.process_batch``.

take what has arrived (never wait for a batch to fill) → process the batch (decode, validate,
one Redis round trip, one predict) → produce predictions and dead letters and go straight on →
commit, asynchronously and periodically, only offsets whose every output Kafka acknowledged
(``services.kafka.tracker``). Commits are synchronous on revoke, on shutdown and before a pause.
A crash therefore means redelivery (same prediction ids), never loss; a rebalance is routine.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import (
    FeatureStoreUnavailable,
    PublishError,
    SchemaRegistryUnavailable,
)
from services.core.settings import Settings
from services.drift.monitor import DriftMonitor
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore, Lookup
from services.kafka.config import consumer_config, producer_config
from services.kafka.inbound import to_inbound
from services.kafka.topics import TopicSpec
from services.kafka.tracker import DeliveryTracker
from services.labels.store import PredictionStore
from services.ratelimit.bucket import ChargeOnce, Limiter
from services.scoring.model import LoadedModel
from services.scoring.pipeline import (
    BatchResult,
    Inbound,
    defaults_only,
    flag_degraded,
    process_batch,
)
from services.scoring.serving import Serving
from services.validation.rules import RecordRules
from streams.model_watcher import ModelWatcher, publish_serving_info
from streams.worker_outputs import DriftFeed, Outputs, remember

logger = logging.getLogger(__name__)
T = TypeVar("T")
FEATURE_RETRIES = 5
JOIN_GRACE_SECONDS = 30.0  # how long --timeout waits for a first partition assignment
LAG_SAMPLE_SECONDS = 5.0
REVOKE_FLUSH_SECONDS = 10.0  # on revoke, how long to wait for outputs before committing
REJOIN_SECONDS = 60.0  # no assignment this long after losing the partitions: a new consumer
CLOSE_SECONDS = 30.0  # most time given to leaving the group at shutdown
# A fenced or rebalancing member's commit fails routinely: what it covered is read again.
_ROUTINE_COMMIT_ERRORS = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}


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
    commits: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0
    # Wall-clock window of the work itself (benchmarks): the first message taken, and the last
    # acknowledgement of an output; CPU seconds of this process since the first message.
    first_message_at: float | None = None
    last_acked_at: float | None = None
    busy_cpu_seconds: float = 0.0

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
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "rebalances": self.rebalances,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "first_message_at": self.first_message_at,
            "last_acked_at": self.last_acked_at,
            "busy_cpu_seconds": round(self.busy_cpu_seconds, 3),
            "max_rss_bytes": _proc_status_bytes("VmHWM:"),
            "rss_bytes": _proc_status_bytes("VmRSS:"),
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
        self._remembering: Future[None] | None = None  # the last batch's prediction-store write
        self.clock_ms = clock_ms
        self.limiter = limiter
        self.worker_id = settings.worker.worker_id or default_worker_id()
        self._stopping = False
        self._closed = False
        self.last_loop = time.monotonic()  # liveness: /healthz fails when this gets old
        self._next_lag_sample = 0.0
        self._next_commit = 0.0
        self._assigned_at: float | None = None
        self._paused: dict[tuple[str, int], float] = {}
        self._revokes = 0  # partitions revoked or lost so far (a batch in hand may be stale)
        self._holding = False  # every partition paused while a dependency is down
        self._degrading = False  # policy degrade, Redis down: batches score with defaults
        self._tracker = DeliveryTracker()
        # Redis calls of a batch (rate-limit tokens, features, the prediction store) wait here,
        # two at a time, while it decodes and validates: the GIL is free while a thread waits
        # on a socket.
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoring-io")
        self._summary = WorkerSummary()
        self._consumer = self._new_consumer()
        self._lost_at: float | None = None  # partitions lost, and no assignment since
        self._producer = Producer(producer_config(settings))
        self._drift_feed = (
            DriftFeed(drift[0], settings.drift.features, input_topic.name) if drift else None
        )
        self._outputs = Outputs(
            self._producer,
            self._tracker,
            self.worker_id,
            predictions=(predictions_topic, self.codec_out),
            dead_letters=(dlq_topic, self.codec_dlq),
            shadow=shadow_topic,
            drift=(drift[1], drift[2]) if drift is not None else None,
            dead_letter_max_bytes=settings.batch.dead_letter_max_bytes,
            beat=self._beat,
            # Dead letters refused for their size are written again alone, in batches well
            # under any topic's max.message.bytes.
            rescue_producer=lambda: Producer(
                producer_config(settings, **{"batch.size": 4096, "linger.ms": 0})
            ),
        )
        publish_serving_info(self.serving, None)

    def _beat(self) -> None:
        self.last_loop = time.monotonic()

    # -- group membership -------------------------------------------------------------------

    def _new_consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings, self.settings.worker.scoring_group, on_commit=self._on_commit
            )
        )

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            [self.input_topic.name],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _rejoin_if_stuck(self, now: float) -> None:
        """A consumer whose partitions were lost (its session expired, e.g. while the broker
        restarted) should rejoin the group by itself; librdkafka sometimes never does (its
        coordinator requests stay queued). After ``REJOIN_SECONDS`` without an assignment the
        consumer is replaced by a new one; the old one is closed on a thread of its own, since
        its close can wait on the coordinator for ever. Nothing was owned meanwhile, so nothing
        is read twice by this worker or skipped."""
        if self._lost_at is None or now - self._lost_at < REJOIN_SECONDS:
            return
        logger.error(
            "no partition assignment %.0f s after losing the partitions: replacing the consumer",
            now - self._lost_at,
        )
        metrics.CONSUMER_REBUILDS.inc()
        old = self._consumer
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        self._consumer = self._new_consumer()
        self._subscribe()
        self._lost_at = now  # the same patience for the new one

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_at = time.monotonic()
        self._lost_at = None
        if self._holding and partitions:
            consumer.pause(partitions)  # input is held until the dependency answers
        self._summary.rebalances += 1
        logger.info(
            "partitions assigned: %s",
            ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none",
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Routine: wait (bounded) for the revoked partitions' outputs, commit what is
        acknowledged, and forget them. Their unacknowledged work is read again by the next
        owner: duplicates with the same prediction id, never a gap."""
        self._revokes += 1
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = time.monotonic() + REVOKE_FLUSH_SECONDS
        while self._tracker.in_flight(keys) and time.monotonic() < deadline:
            self._producer.flush(0.1)
        self._commit(sync=True, only=keys)
        self._forget(keys)
        logger.info("partitions revoked: %s", ",".join(f"{t}[{p}]" for t, p in keys) or "none")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us (session expired): nothing may be committed."""
        self._revokes += 1
        self._lost_at = time.monotonic()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._forget(keys)
        logger.warning("partitions lost: %s", ",".join(f"{t}[{p}]" for t, p in keys))

    def _forget(self, keys: list[tuple[str, int]]) -> None:
        self._tracker.forget(keys)
        for t, p in keys:
            self._paused.pop((t, p), None)
            try:
                metrics.CONSUMER_LAG.remove(t, str(p))
            except KeyError:
                pass

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Asynchronous commit results (served by consume/poll)."""
        if err is None:
            return
        self._commit_failed(err, [(tp.topic, tp.partition) for tp in partitions])

    def _commit_failed(self, err: KafkaError, keys: list[tuple[str, int]]) -> None:
        if err.code() == KafkaError._NO_OFFSET:
            return
        self._summary.commit_failures += 1
        metrics.COMMITS.labels(outcome=err.name().lower()).inc()
        self._tracker.uncommit(keys)
        level = logging.INFO if err.code() in _ROUTINE_COMMIT_ERRORS else logging.WARNING
        logger.log(level, "commit not accepted (%s); the offsets are read again", err.name())

    def _commit(self, *, sync: bool, only: list[tuple[str, int]] | None = None) -> None:
        positions = self._tracker.positions(only)
        self._count_acknowledged()
        if not positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            if sync:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(exc.args[0], list(positions))
            return
        self._summary.commits += 1
        metrics.COMMITS.labels(outcome="ok").inc()

    def _commit_if_due(self, now: float) -> None:
        """The periodic asynchronous commit of what Kafka acknowledged."""
        if now >= self._next_commit:
            self._commit(sync=False)
            self._next_commit = now + self.settings.batch.commit_interval_seconds

    def _count_acknowledged(self) -> None:
        """Metrics for outputs once Kafka acknowledged them (per chunk, arrays)."""
        for chunk in self._tracker.completed():
            self._outputs.acknowledged(chunk)
            if chunk.done_at is not None:
                last = self._summary.last_acked_at
                self._summary.last_acked_at = (
                    chunk.done_at if last is None else max(last, chunk.done_at)
                )
        metrics.OUTPUTS_IN_FLIGHT.set(self._tracker.in_flight())

    # -- the loop ---------------------------------------------------------------------------

    def _flush_drift(self, *, force: bool) -> None:
        feed = self._drift_feed
        if feed is not None and (force or feed.due(time.monotonic())):
            self._outputs.publish_signals(feed.flush(self.serving, self.clock_ms()))

    def _start_io(self, call: Callable[[], T]) -> Callable[[], T]:
        """Run a Redis call on the IO thread; the batch's CPU work goes on meanwhile."""
        return self._io.submit(call).result

    def _remember(self, store: PredictionStore, result: BatchResult) -> None:
        """The prediction-store write goes to the IO thread, off the scoring path; the next
        batch's Redis calls queue behind it. At most one waits (bounded memory): a slow Redis
        slows scoring rather than growing a queue. Best effort (``remember`` counts errors)."""
        if self._remembering is not None:
            self._remembering.result()
        self._remembering = self._io.submit(remember, store, result)

    def dead_threads(self) -> list[str]:
        """Background threads that should run and do not (for the readiness probe)."""
        dead = []
        watcher = self.watcher
        if watcher is not None and watcher.started and not watcher.alive and not self._closed:
            dead.append("model-watcher")
        return dead

    def request_stop(self, *_: object) -> None:
        """Finish the batch in hand, flush, commit, and leave (SIGTERM/SIGINT handler)."""
        self._stopping = True

    def run(
        self, max_events: int | None = None, idle_timeout: float | None = None
    ) -> WorkerSummary:
        """Score until stopped, ``max_events`` inputs are handled (their outputs acknowledged
        and committed on the way out), or nothing came for ``idle_timeout`` seconds."""
        summary = self._summary
        started = last_message = time.monotonic()
        cpu_started: float | None = None
        self._subscribe()
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
        # Everything loaded so far (libraries, the model) lives as long as the process: keep it
        # out of the garbage collector's full passes, which otherwise walk it every few seconds
        # and stall the loop for tens to hundreds of milliseconds.
        gc.collect()
        gc.freeze()
        try:
            while not self._stopping:
                self.last_loop = now = time.monotonic()
                metrics.WORKER_UP.set(time.time())
                self._maybe_swap(summary)
                self._rejoin_if_stuck(now)
                self._sample_lag(now)
                self._resume_due(now)
                want = self.settings.batch.max_messages
                if max_events is not None:
                    if summary.consumed >= max_events:
                        break
                    want = min(want, max_events - summary.consumed)
                messages = self._take(want)
                self._producer.poll(0)  # delivery reports: advance the commit positions
                self._check_deliveries()
                self._commit_if_due(now)
                if not messages:
                    self._flush_drift(force=False)
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
                if summary.first_message_at is None:
                    summary.first_message_at = time.time()
                    cpu_started = time.process_time()
                self._handle(messages, summary)
                self._bound_in_flight()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            summary.elapsed_seconds = time.monotonic() - started
            self._close()
            if cpu_started is not None:
                summary.busy_cpu_seconds = time.process_time() - cpu_started
            logger.info("scoring worker %s stopped: %s", self.worker_id, summary.to_dict())
        return summary

    def _close(self) -> None:
        """Flush, commit what Kafka acknowledged, leave the group; raise if outputs failed."""
        self._closed = True
        self._flush_drift(force=True)
        self._io.shutdown(wait=True)  # the last prediction-store write included
        remaining = self._producer.flush(30)
        try:
            self._commit(sync=True)
        finally:
            # Leaving the group waits on its coordinator; one that does not answer must not
            # keep the process from exiting (the group notices after the session timeout).
            closer = threading.Thread(target=_close_quietly, args=(self._consumer,), daemon=True)
            closer.start()
            closer.join(CLOSE_SECONDS)
            if closer.is_alive():
                logger.warning("the consumer did not leave its group in %.0f s", CLOSE_SECONDS)
        if remaining:
            logger.error("%d outputs unacknowledged at shutdown: not committed", remaining)
        self._check_deliveries()

    def _take(self, n: int) -> list[Message]:
        """What has arrived, up to ``n``; waits (up to the batch timeout) only when nothing has.

        librdkafka's ``consume(n, timeout)`` waits for ``n`` messages or the timeout, so a
        batch that never fills would cost the whole timeout in latency. Instead: take what is
        queued now; when nothing is, wait for one message, then take what came with it.
        """
        batch = self._consumer.consume(num_messages=n, timeout=0)
        if not batch:
            batch = self._consumer.consume(
                num_messages=1, timeout=self.settings.batch.timeout_seconds
            )
            if batch and n > 1:
                batch += self._consumer.consume(num_messages=n - 1, timeout=0)
        out = []
        for m in batch:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                logger.warning("consume error: %s", err)
        return out

    def _check_deliveries(self) -> None:
        """A prediction or dead letter Kafka refused (after librdkafka's own retries): stop.
        Offsets stay before it, so a restart scores it again."""
        if self._tracker.errors:
            (topic, partition), err = self._tracker.errors[0]
            raise PublishError(
                f"{len(self._tracker.errors)} outputs were not delivered, first: {err}; "
                "offsets are not committed past them",
                topic=topic,
                partition=partition,
                stage="publish",
            )

    def _bound_in_flight(self) -> None:
        """Stop taking input while too many outputs wait for the broker (bounded memory)."""
        limit = self.settings.batch.max_in_flight
        deadline = time.monotonic() + 60
        while self._tracker.in_flight() > limit:
            self._producer.poll(0.05)
            self._check_deliveries()
            self.last_loop = time.monotonic()
            if time.monotonic() > deadline:
                raise PublishError(
                    f"{self._tracker.in_flight()} outputs unacknowledged for 60 s",
                    topic=self.predictions_topic.name,
                    stage="publish",
                )

    def _handle(self, messages: list[Message], summary: WorkerSummary) -> None:
        inbound = to_inbound(messages)
        metrics.MESSAGES_CONSUMED.labels(topic=self.input_topic.name).inc(len(inbound))
        metrics.BATCH_MESSAGES.observe(len(inbound))
        t0 = time.perf_counter()
        result = self._process_with_retry(inbound)
        if result is None:
            self._rewind(inbound)  # dropped uncommitted: read again by each partition's owner
            return
        t1 = time.perf_counter()
        signals: list[dict[str, Any]] = []
        feed = self._drift_feed
        if feed is not None:
            feed.add(result, time.monotonic())
            if feed.due(time.monotonic()):
                signals = feed.flush(self.serving, self.clock_ms())
        t2 = time.perf_counter()
        self._outputs.publish(inbound, result, signals, self.clock_ms())
        t3 = time.perf_counter()
        if self.predictions_store is not None and result.served is not None:
            self._remember(self.predictions_store, result)
        t4 = time.perf_counter()
        for stage, seconds in (
            ("process", t1 - t0),
            ("drift", t2 - t1),
            ("publish", t3 - t2),
            ("remember", t4 - t3),
        ):
            metrics.STAGE_DURATION.labels(stage=stage).observe(seconds)
        if result.deferred:
            self._hold_back(result.deferred)
        summary.deferred += len(result.deferred)
        summary.consumed += len(inbound) - len(result.deferred)
        summary.predictions += result.n_predictions
        summary.dead_letters += len(result.dead_letters)
        if result.shadowed is not None and self.shadow_topic is not None:
            summary.shadow_predictions += len(result.shadowed)
        summary.batches += 1
        summary.degraded_batches += int(result.degraded)
        if result.dead_letters:
            summary.rejected_by_reason.update(d.rejected.reason.value for d in result.dead_letters)

    def _process_with_retry(self, inbound: list[Inbound]) -> BatchResult | None:
        """The batch's result, once its dependencies answer. Redis or the schema registry not
        answering is transient: a few quick retries, then (Redis, policy ``degrade``) scoring
        with the declared defaults flagged degraded, or else every partition paused while the
        batch is retried with backoff until they answer. Returns None when the batch must be
        dropped uncommitted: the worker is stopping, or a rebalance took partitions meanwhile
        (their next owner reads them from the last commit)."""
        delay = 0.2
        # Tokens are charged (and refunded) once per batch, however often it is retried.
        limiter = ChargeOnce(self.limiter) if self.limiter is not None else None
        lookup: Callable[[dict[str, Sequence[str]]], Mapping[str, Lookup]] = self.store.get_many
        degraded = False
        revokes = self._revokes
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    result = process_batch(
                        inbound,
                        self.codec_in,
                        self.rules,
                        self.spec,
                        lookup,
                        self.serving,
                        self.clock_ms(),
                        limiter,
                        self.settings.rate_limit.policy == "backpressure",
                        self.settings.model.decision_threshold,
                        self._start_io,
                    )
                    break
                except (FeatureStoreUnavailable, SchemaRegistryUnavailable) as exc:
                    redis_down = isinstance(exc, FeatureStoreUnavailable)
                    dependency = "redis" if redis_down else "schema_registry"
                    metrics.DEPENDENCY_FAILURES.labels(dependency=dependency).inc()
                    if redis_down:
                        metrics.FEATURE_LOOKUPS.labels(outcome="error").inc()
                    if attempt == 1 or attempt % 20 == 0:
                        logger.warning("%s unavailable (attempt %d): %s", dependency, attempt, exc)
                    # While degrading, one failed try is enough: no batch waits for retries.
                    quick = 1 if redis_down and self._degrading else FEATURE_RETRIES
                    if attempt < quick:
                        self._wait(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    if redis_down and self.settings.redis.unavailable_policy == "degrade":
                        if not self._degrading:
                            logger.warning("redis unavailable: scoring with declared defaults")
                        self._degrading = True
                        degraded, lookup, limiter = True, defaults_only(self.spec), None
                        continue
                    if not self._holding:
                        self._holding = True
                        self._consumer.pause(self._consumer.assignment())
                        metrics.INPUT_HELD.set(1)
                        logger.warning(
                            "%s unavailable: input paused, retrying (backoff up to 5 s)", dependency
                        )
                    self._wait(delay)
                    delay = min(delay * 2, 5.0)
                    if self._stopping or self._revokes != revokes:
                        return None
        finally:
            if self._holding:
                self._holding = False
                held = set(self._paused)  # backpressure pauses stay
                again = [
                    tp for tp in self._consumer.assignment() if (tp.topic, tp.partition) not in held
                ]
                if again:
                    self._consumer.resume(again)
                metrics.INPUT_HELD.set(0)
                logger.info("input resumed")
        if self._revokes != revokes:
            return None
        if degraded:
            result = flag_degraded(result, "feature_store_down")
        elif self._degrading:
            self._degrading = False
            logger.info("redis answers again: scoring with stored features")
        for group, n in result.missing.items():
            metrics.FEATURE_LOOKUPS.labels(outcome=f"missing_{group}").inc(n)
        if result.served is not None and not degraded:
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

    def _rewind(self, inbound: list[Inbound]) -> None:
        """Put the position of each partition still ours back to the first message of a batch
        that was dropped, so that it is read again rather than skipped (a cooperative rebalance
        keeps the positions of the partitions it does not move)."""
        first: dict[tuple[str, int], int] = {}
        for m in inbound:
            key = (m.topic, m.partition)
            first[key] = min(first.get(key, m.offset), m.offset)
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (t, p), o in first.items():
            if (t, p) in owned:
                self._consumer.seek(TopicPartition(t, p, o))

    def _wait(self, seconds: float) -> None:
        """A bounded wait inside a batch: delivery reports and acknowledged commits go on, and
        liveness knows we are waiting, not stuck. While input is held (every partition paused)
        the consumer is polled too, so the group membership is kept and rebalances run."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            self.last_loop = now = time.monotonic()
            if now >= deadline:
                return
            self._producer.poll(0)
            self._commit_if_due(now)
            if self._holding:
                # Paused partitions return nothing; should one come (a partition assigned
                # meanwhile), its position is put back: it is read again, never skipped.
                back: dict[tuple[str, int], int] = {}
                for m in self._consumer.consume(num_messages=100, timeout=min(0.1, deadline - now)):
                    if m.error() is None:
                        key = (m.topic() or "", m.partition() or 0)
                        back[key] = min(back.get(key, m.offset() or 0), m.offset() or 0)
                for (t, p), o in back.items():
                    self._consumer.seek(TopicPartition(t, p, o))
            else:
                self._producer.poll(min(0.05, deadline - now))

    def _maybe_swap(self, summary: WorkerSummary) -> None:
        """Between batches only: every prediction of a batch comes from one serving set."""
        if self.watcher is None:
            return
        new = self.watcher.take()
        if new is None:
            return
        if (new.versions(), new.mode, new.canary_percent) == (
            self.serving.versions(),
            self.serving.mode,
            self.serving.canary_percent,
        ):
            self.serving = new  # the same models, compiled: not a change of what is served
            logger.info("serving the compiled form of %s", new.describe())
            return
        logger.info(
            "swapped to %s (was %s)",
            new.describe(),
            self.serving.describe(),
            extra={"model_version": new.champion.version, "component": "model"},
        )
        self._flush_drift(force=True)  # what the old serving set scored is judged as its own
        publish_serving_info(new, self.serving)
        if self.drift is not None and new.champion.version != self.serving.champion.version:
            self.drift[0].reset("score")
        self.serving = new
        summary.swaps += 1
        metrics.MODEL_SWAPS.inc()

    def _sample_lag(self, now: float) -> None:
        """Consumer lag per assigned partition, from the client's cached high watermarks (no
        broker round trip), at most every few seconds."""
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

    def _hold_back(self, deferred: list[Inbound]) -> None:
        """Backpressure: commit what is acknowledged, rewind each throttled partition to its
        first deferred message and pause it; ``_resume_due`` lets it go again later."""
        first: dict[tuple[str, int], int] = {}
        for d in deferred:
            key = (d.topic, d.partition)
            first[key] = min(first.get(key, d.offset), d.offset)
        self._commit(sync=True, only=list(first))
        parts = [TopicPartition(t, p, o) for (t, p), o in first.items()]
        self._consumer.pause(parts)
        for tp in parts:
            self._consumer.seek(tp)
        until = time.monotonic() + self.settings.rate_limit.pause_seconds
        for t, p in first:
            self._paused[(t, p)] = until
        metrics.MESSAGES_DEFERRED.inc(len(deferred))

    def _resume_due(self, now: float) -> None:
        if not self._paused:
            return
        due = [tp for tp, until in self._paused.items() if until <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self._paused[tp]


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        logger.info("closing a consumer: %s", exc)


def _proc_status_bytes(field: str) -> int:
    """This process's resident memory now (``VmRSS:``) or at its peak (``VmHWM:``; not
    ``ru_maxrss``, which carries the parent's peak across exec); 0 where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
