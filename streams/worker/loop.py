"""The scoring worker: the imperative shell around the scoring core.

take what has arrived (never wait for a batch to fill) → the dependency gate runs
``process_batch`` (decode, validate, one Redis round trip, one predict) → the shared accounting
step → produce predictions and dead letters and go straight on → commit only offsets whose every
output Kafka acknowledged (``streams.worker.membership``). Pauses (backpressure, a held input)
live in ``streams.worker.flow``; the decisions on an outage in ``services.scoring.gate``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Message

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.records import Inbound
from services.core.settings import Settings
from services.kafka.inbound import to_inbound
from services.kafka.tracker import DeliveryTracker
from services.labels.store import PredictionStore
from services.ratelimit.bucket import Limiter
from services.scoring.accounting import account
from services.scoring.gate import DependencyGate
from services.scoring.results import BatchResult
from services.scoring.serving import Serving
from services.scoring.stages import Stages
from streams.model_watcher import ModelWatcher, publish_serving_info
from streams.worker.deliveries import bound_in_flight, check_deliveries, take_swap
from streams.worker.feeds import DriftFeed, remember
from streams.worker.flow import TP, Flow
from streams.worker.holding import HeldInput
from streams.worker.membership import Membership
from streams.worker.outputs import Outputs
from streams.worker.parts import DriftOutput, WorkerTopics
from streams.worker.refused import Refusals
from streams.worker.summary import WorkerSummary, default_worker_id
from streams.worker.transactional import transactions, worker_producer

logger = logging.getLogger("streams.worker")
T = TypeVar("T")
JOIN_GRACE_SECONDS = 30.0  # how long --timeout waits for a first partition assignment


class ScoringWorker:
    """One scoring process; several share the input's partitions through the consumer group."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: WorkerTopics,
        stages: Stages,
        prediction_codec: AvroCodec,
        dead_letter_codec: AvroCodec,
        limiter: Limiter | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        watcher: ModelWatcher | None = None,
        drift: DriftOutput | None = None,
        predictions_store: PredictionStore | None = None,
    ) -> None:
        self.settings, self.topics, self.stages = settings, topics, stages
        self.watcher, self.drift, self.predictions_store = watcher, drift, predictions_store
        self.clock_ms, self.limiter = clock_ms, limiter
        self.worker_id = settings.worker.worker_id or default_worker_id()
        self.gate = DependencyGate(settings.redis.unavailable_policy)
        self.refusals = Refusals(settings.redis.auth_failure_seconds)  # WRONGPASS, NOPERM
        self.stopping = False
        self.closed = False
        self.last_loop = time.monotonic()  # liveness: /healthz fails when this gets old
        self._remembering: Future[None] | None = None  # the last batch's prediction-store write
        # Redis calls of a batch (rate-limit tokens, features, the prediction store) wait here,
        # two at a time, while it decodes and validates: the GIL is free while a thread waits
        # on a socket.
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scoring-io")
        self.summary = WorkerSummary()
        self.tracker = DeliveryTracker()
        self.producer = worker_producer(settings, self.worker_id)  # transactional: exactly_once
        self.flow = Flow(beat=self._beat)
        self.outputs = Outputs.for_worker(
            settings,
            self.producer,
            self.tracker,
            self.worker_id,
            topics,
            (prediction_codec, dead_letter_codec),
            drift,
            beat=self._beat,
        )
        self.membership = Membership(
            settings,
            topics.input.name,
            tracker=self.tracker,
            producer=self.producer,
            flow=self.flow,
            summary=self.summary,
            acknowledged=self.outputs.acknowledged,
        )
        self.txn = transactions(
            settings, self.producer, self.tracker, self.membership, self.flow, self._beat
        )
        self._drift_feed = (
            DriftFeed(drift.monitor, settings.drift.features, topics.input.name) if drift else None
        )
        publish_serving_info(self.serving, None)

    @property
    def serving(self) -> Serving:
        return self.stages.serving

    def _beat(self) -> None:
        self.last_loop = time.monotonic()

    def _start_io(self, call: Callable[[], T]) -> Callable[[], T]:
        """Run a Redis call on the IO thread; the batch's CPU work goes on meanwhile."""
        return self._io.submit(call).result

    def request_stop(self, *_: object) -> None:
        """Finish the batch in hand, flush, commit, and leave (SIGTERM/SIGINT handler)."""
        self.stopping = True

    def run(
        self, max_events: int | None = None, idle_timeout: float | None = None
    ) -> WorkerSummary:
        """Score until stopped, ``max_events`` inputs are handled (their outputs acknowledged
        and committed on the way out), or nothing came for ``idle_timeout`` seconds."""
        summary, membership = self.summary, self.membership
        started = last_message = time.monotonic()
        cpu_started: float | None = None
        membership.subscribe()
        logger.info(
            "scoring worker %s started: %s -> %s, model %s: %s",
            self.worker_id,
            self.topics.input.name,
            self.topics.predictions.name,
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
            while not self.stopping:
                self.last_loop = now = time.monotonic()
                metrics.WORKER_UP.set(time.time())
                self._maybe_swap()
                membership.rejoin_if_stuck(now)
                membership.sample_lag(now)
                self.flow.resume_due(membership.consumer, now)
                want = self.settings.batch.max_messages
                if max_events is not None:
                    if summary.consumed >= max_events:
                        break
                    want = min(want, max_events - summary.consumed)
                revokes, epochs = membership.revokes, membership.epochs()
                messages = membership.take(want, self.settings.batch.timeout_seconds)
                self.producer.poll(0)  # delivery reports: advance the commit positions
                self.outputs.poll_side()
                check_deliveries(self.tracker)
                membership.commit_if_due(now)
                if not messages:
                    self._flush_drift(force=False)
                    # Idle time counts from the last message or the last assignment, so a slow
                    # group join (a dead member's session must expire first) is not "idle".
                    assigned_at = membership.assigned_at
                    since = time.monotonic() - max(last_message, assigned_at or started)
                    grace = 0.0 if assigned_at else JOIN_GRACE_SECONDS
                    if (
                        idle_timeout is not None
                        and since > idle_timeout + grace
                        and not self.flow.paused
                    ):
                        break
                    continue
                last_message = time.monotonic()
                if summary.first_message_at is None:
                    summary.first_message_at = time.time()
                    cpu_started = time.process_time()
                self._handle(messages, revokes, epochs)
                bound_in_flight(
                    self.tracker,
                    self.producer,
                    self.settings.batch.max_in_flight,
                    self.topics.predictions.name,
                    self._beat,
                )
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
        self.closed = True
        self._flush_drift(force=True)
        self._io.shutdown(wait=True)  # the last prediction-store write included
        remaining = self.producer.flush(30)
        self.outputs.poll_side(flush_seconds=5.0)  # best effort: a bounded wait
        self.membership.leave()
        if remaining:
            logger.error("%d outputs unacknowledged at shutdown: not committed", remaining)
        check_deliveries(self.tracker)

    def _handle(self, messages: list[Message], revokes: int, epochs: dict[TP, int]) -> None:
        """Score one batch through the gate, count it, publish it. A revoke served since
        ``revokes``/``epochs`` were read (before the take) makes it stale: it is dropped, and
        its partitions go back to its first message, or to the commit if assigned again."""
        inbound = to_inbound(messages)
        t0 = time.perf_counter()
        result = self._score(inbound, revokes)
        if result is None:
            kept = self.membership.kept(epochs)
            self.flow.rewind(self.membership.consumer, inbound, kept)
            # Assigned again since the take: back to the commit, where a new owner starts.
            taken = {(m.topic, m.partition) for m in inbound} & self.membership.owned()
            self.flow.restart_from_commit(self.membership.consumer, taken - kept)
            return
        metrics.MESSAGES_CONSUMED.labels(topic=self.topics.input.name).inc(len(inbound))
        metrics.BATCH_MESSAGES.observe(len(inbound))
        t1 = time.perf_counter()
        signals: list[dict[str, Any]] = []
        feed = self._drift_feed
        if feed is not None:
            feed.add(result, time.monotonic())
            if feed.due(time.monotonic()):
                signals = feed.flush(self.serving, self.clock_ms())
        t2 = time.perf_counter()
        if self.txn is None:
            self.outputs.publish(inbound, result, signals, self.clock_ms())
        elif not self.txn.publish(self.outputs, inbound, result, signals, self.clock_ms()):
            return  # aborted: nothing of it is visible, and it is read again from the commit
        t3 = time.perf_counter()
        if self.predictions_store is not None and result.served is not None:
            self._remember(self.predictions_store, result)
        t4 = time.perf_counter()
        stages = {"process": t1 - t0, "drift": t2 - t1, "publish": t3 - t2, "remember": t4 - t3}
        for stage, seconds in stages.items():
            metrics.STAGE_DURATION.labels(stage=stage).observe(seconds)
        if result.deferred:
            keys = list({(d.topic, d.partition) for d in result.deferred})
            self.membership.commit(sync=True, only=keys)
            until = time.monotonic() + self.settings.rate_limit.pause_seconds
            self.flow.hold_back(self.membership.consumer, result.deferred, until)
        self.summary.add(len(inbound), result, shadow_published=self.topics.shadow is not None)

    def _score(self, inbound: list[Inbound], revokes: int) -> BatchResult | None:
        """The batch's result through the dependency gate, counted; None when it must be
        dropped uncommitted (partitions revoked meanwhile, or a stop while input is held)."""
        shell = HeldInput(
            flow=self.flow,
            membership=self.membership,
            producer=self.producer,
            stopping=lambda: self.stopping,
            clock=time.monotonic,
            beat=self._beat,
            revokes=revokes,
        )
        if shell.abandoned():
            return None
        backpressure = self.settings.rate_limit.policy == "backpressure"
        gate = partial(self.gate.run, self.stages, inbound, self.clock_ms, shell)
        result = self.refusals.score(
            lambda: gate(limiter=self.limiter, backpressure=backpressure, start=self._start_io),
            shell,
        )
        if result is not None:
            account(result, shadow_published=self.topics.shadow is not None)
        return result

    def _remember(self, store: PredictionStore, result: BatchResult) -> None:
        """The prediction-store write goes to the IO thread, off the scoring path; the next
        batch's Redis calls queue behind it. At most one waits (bounded memory): a slow Redis
        slows scoring rather than growing a queue. Best effort (``remember`` counts errors)."""
        if self._remembering is not None:
            self._remembering.result()
        self._remembering = self._io.submit(remember, store, result)

    def _flush_drift(self, *, force: bool) -> None:
        feed = self._drift_feed
        if feed is not None and (force or feed.due(time.monotonic())):
            self.outputs.publish_signals(feed.flush(self.serving, self.clock_ms()))

    def _maybe_swap(self) -> None:
        """Between batches only: every prediction of a batch comes from one serving set."""
        if self.watcher is None:
            return
        swap = take_swap(self.watcher, self.serving)
        if swap is None:
            return
        new, changed = swap
        if changed:
            self._flush_drift(force=True)  # what the old set scored is judged as its own
            publish_serving_info(new, self.serving)
            feed = self._drift_feed
            if feed is not None and new.champion.version != self.serving.champion.version:
                feed.reset_predictions()
            self.summary.swaps += 1
            metrics.MODEL_SWAPS.inc()
        self.stages = self.stages.with_serving(new)
