"""The worker's group membership and commits: the consumer, its rebalance callbacks, commits of
what Kafka acknowledged (``services.kafka.tracker``), lag samples, and rejoining when stuck.

Commits are asynchronous and periodic, synchronous on revoke, on shutdown and before a pause.
A crash therefore means redelivery (same prediction ids), never loss; a rebalance is routine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from services.core import metrics
from services.core.settings import Settings
from services.kafka.auth import WATCH
from services.kafka.config import consumer_config
from services.kafka.denied import not_authorized
from services.kafka.tracker import Chunk, DeliveryTracker
from streams.worker.flow import TP, Flow
from streams.worker.progress import Progress
from streams.worker.summary import WorkerSummary

logger = logging.getLogger("streams.worker")
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


class Membership:
    """One worker's consumer in its group, and the commits of what its outputs acknowledged."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        tracker: DeliveryTracker,
        producer: Producer,
        flow: Flow,
        summary: WorkerSummary,
        acknowledged: Callable[[Chunk], None],
    ) -> None:
        self.settings, self.topic = settings, topic
        self.tracker, self.producer, self.flow, self.summary = tracker, producer, flow, summary
        self.acknowledged = acknowledged
        self.auth = WATCH  # refused TLS handshakes and SASL logins (a test sets its own)
        # exactly_once: offsets commit inside each batch's transaction, never from here.
        self.transactional = settings.worker.processing_guarantee == "exactly_once"
        self.revokes = 0  # partitions revoked or lost so far (a batch in hand may be stale)
        self.assigned_at: float | None = None
        self.lost_at: float | None = None  # partitions lost, and no assignment since
        self.emptied_at: float | None = None  # left with nothing by a revoke or loss
        self.progress = Progress()  # positions against high watermarks, for readiness
        self._next_commit = 0.0
        self._next_lag_sample = 0.0
        self._owned: frozenset[TP] = frozenset()
        # Per partition, how many times it was assigned: a partition whose count moved since a
        # batch was taken was revoked and assigned again meanwhile.
        self._epochs: dict[TP, int] = {}
        self.consumer = self._new_consumer()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings, self.settings.worker.scoring_group, on_commit=self._on_commit
            )
        )

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def epochs(self) -> dict[TP, int]:
        """The owned partitions with their assignment counts (a snapshot: compare it later with
        ``kept`` to find those owned without a break)."""
        return {tp: self._epochs.get(tp, 0) for tp in self._owned}

    def kept(self, before: dict[TP, int]) -> set[TP]:
        """The partitions of ``before`` still owned, and not assigned again since."""
        now = self.epochs()
        return {tp for tp, epoch in before.items() if now.get(tp) == epoch}

    def owned(self) -> set[TP]:
        """The partitions assigned to this member, as its callbacks recorded them (safe to read
        from the probe thread: no call into the client, which may be inside ``consume``)."""
        return set(self._owned)

    def rejoin_if_stuck(self, now: float) -> None:
        """A consumer whose partitions were lost (its session expired, e.g. while the broker
        restarted) should rejoin the group by itself; librdkafka sometimes never does (its
        coordinator requests stay queued). After ``REJOIN_SECONDS`` without an assignment the
        consumer is replaced by a new one; the old one is closed on a thread of its own, since
        its close can wait on the coordinator for ever. Nothing was owned meanwhile, so nothing
        is read twice by this worker or skipped."""
        if self.lost_at is None or now - self.lost_at < REJOIN_SECONDS:
            return
        logger.error(
            "no partition assignment %.0f s after losing the partitions: replacing the consumer",
            now - self.lost_at,
        )
        metrics.CONSUMER_REBUILDS.inc()
        old = self.consumer
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        self.consumer = self._new_consumer()
        self._owned = frozenset()
        self.subscribe()
        self.lost_at = now  # the same patience for the new one

    def take(self, n: int, timeout: float) -> list[Message]:
        """What has arrived, up to ``n``; waits (up to the batch timeout) only when nothing has.

        librdkafka's ``consume(n, timeout)`` waits for ``n`` messages or the timeout, so a
        batch that never fills would cost the whole timeout in latency. Instead: take what is
        queued now; when nothing is, wait for one message, then take what came with it.
        """
        self.auth.raise_if_refused(self.settings)  # a refused CA or password: one line
        consumer = self.consumer
        batch = consumer.consume(num_messages=n, timeout=0)
        if not batch:
            batch = consumer.consume(num_messages=1, timeout=timeout)
            if batch and n > 1:
                batch += consumer.consume(num_messages=n - 1, timeout=0)
        out = []
        for m in batch:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                # A missing ACL never heals by retrying: a decided stop, one line naming it.
                group = err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
                name = self.settings.worker.scoring_group if group else m.topic()
                refused = not_authorized(self.settings, str(err), "Read", name)
                if refused is not None:
                    raise refused
                logger.warning("consume error: %s", err)
        if out:
            self.auth.answered()  # the cluster answers: a run of refusals is over
        return out

    # -- rebalance callbacks (served inside consume/poll) ---------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:
            return  # a replaced consumer closing on its own thread: not ours any more
        self.assigned_at = time.monotonic()
        self.lost_at = self.emptied_at = None
        self.auth.answered()  # the group coordinator answered
        self.flow.assigned(consumer, partitions)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._epochs = self._epochs | {k: self._epochs.get(k, 0) + 1 for k in keys}
        self._owned = self._owned | set(keys)
        self.summary.rebalances += 1
        logger.info(
            "partitions assigned: %s",
            ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Routine: wait (bounded) for the revoked partitions' outputs, commit what is
        acknowledged, and forget them. Their unacknowledged work is read again by the next
        owner: duplicates with the same prediction id, never a gap."""
        if consumer is not self.consumer:
            return
        self.revokes += 1
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = time.monotonic() + REVOKE_FLUSH_SECONDS
        while self.tracker.in_flight(keys) and time.monotonic() < deadline:
            self.producer.flush(0.1)
        self.commit(sync=True, only=keys)
        self._forget(consumer, keys)
        logger.info("partitions revoked: %s", ",".join(f"{t}[{p}]" for t, p in keys) or "none")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us (session expired): nothing may be committed."""
        if consumer is not self.consumer:
            return
        self.revokes += 1
        self.lost_at = time.monotonic()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._forget(consumer, keys)
        logger.warning("partitions lost: %s", ",".join(f"{t}[{p}]" for t, p in keys))

    def _forget(self, consumer: Consumer, keys: list[TP]) -> None:
        self._owned = self._owned - set(keys)
        if not self._owned and self.emptied_at is None:
            self.emptied_at = time.monotonic()
        self.tracker.forget(keys)
        self.flow.forget(consumer, keys)
        for t, p in keys:
            try:
                metrics.CONSUMER_LAG.remove(t, str(p))
            except KeyError:
                pass

    # -- commits ------------------------------------------------------------------------------

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Asynchronous commit results (served by consume/poll): a request-level error, or an
        error on single partitions (the others were committed)."""
        if err is not None:
            self._commit_failed(err, [(tp.topic, tp.partition) for tp in partitions])
            return
        for tp in partitions:
            if tp.error is not None:
                self._commit_failed(tp.error, [(tp.topic, tp.partition)])

    def _commit_failed(self, err: KafkaError, keys: list[TP]) -> None:
        if err.code() == KafkaError._NO_OFFSET:
            return
        self.summary.commit_failures += 1
        metrics.COMMITS.labels(outcome=err.name().lower()).inc()
        self.tracker.uncommit(keys)
        level = logging.INFO if err.code() in _ROUTINE_COMMIT_ERRORS else logging.WARNING
        logger.log(level, "commit not accepted (%s); the offsets are read again", err.name())

    def commit(self, *, sync: bool, only: list[TP] | None = None) -> None:
        """Commit the positions every output acknowledged (``only`` these partitions)."""
        positions = self.tracker.positions(only)
        self.count_acknowledged()
        if not positions or self.transactional:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self._commit_failed(exc.args[0], list(positions))
            return
        self.summary.commits += 1
        metrics.COMMITS.labels(outcome="ok").inc()

    def commit_if_due(self, now: float) -> None:
        """The periodic asynchronous commit of what Kafka acknowledged."""
        if now >= self._next_commit:
            self.commit(sync=False)
            self._next_commit = now + self.settings.batch.commit_interval_seconds

    def count_acknowledged(self) -> None:
        """Metrics for outputs once Kafka acknowledged them (per chunk, arrays)."""
        for chunk in self.tracker.completed():
            self.acknowledged(chunk)
            if chunk.done_at is not None:
                last = self.summary.last_acked_at
                self.summary.last_acked_at = (
                    chunk.done_at if last is None else max(last, chunk.done_at)
                )
        metrics.OUTPUTS_IN_FLIGHT.set(self.tracker.in_flight())

    def sample_lag(self, now: float) -> None:
        """Consumer lag per assigned partition, from the client's cached high watermarks (no
        broker round trip), at most every few seconds."""
        if now < self._next_lag_sample:
            return
        self._next_lag_sample = now + LAG_SAMPLE_SECONDS
        assigned = self.consumer.assignment()
        sample: dict[TP, tuple[int, int]] = {}
        for tp in self.consumer.position(assigned) if assigned else []:
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            sample[(tp.topic, tp.partition)] = (tp.offset, high)
            if high < 0 or tp.offset < 0:
                continue  # not known yet (nothing fetched, or no position)
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(0, high - tp.offset)
            )
        flow = self.flow
        explained = self._owned if flow.holding else set(flow.paused)
        self.progress.observe(now, sample, explained)

    def leave(self) -> None:
        """Commit what Kafka acknowledged and leave the group. Leaving waits on the group's
        coordinator; one that does not answer must not keep the process from exiting (the
        group notices after the session timeout)."""
        try:
            self.commit(sync=True)
        finally:
            closer = threading.Thread(target=_close_quietly, args=(self.consumer,), daemon=True)
            closer.start()
            closer.join(CLOSE_SECONDS)
            if closer.is_alive():
                logger.warning("the consumer did not leave its group in %.0f s", CLOSE_SECONDS)


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        logger.info("closing a consumer: %s", exc)
