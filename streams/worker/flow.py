"""Which owned partitions the worker has paused, and why: backpressure (a partition whose
producers ran out of tokens, until a due time) or a hold (every partition, while a dependency is
down); and rewinding a partition to the first message of a batch that was dropped.

librdkafka keeps an application's pause across a revoke and a later assignment, and clears it
only on ``resume()``. So the worker's record and the client's must agree at every turn: a
partition that is assigned is resumed unless it is held, a revoked or lost partition is resumed
and forgotten, and ``overdue`` tells the readiness probe about a pause that outlived its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from services.core import metrics
from services.core.errors import BrokerUnavailable
from services.core.records import Inbound, first_offsets
from services.kafka.tracker import TopicPartitionKey

logger = logging.getLogger(__name__)
TP = TopicPartitionKey  # the tracker's (topic, partition) key

# How long reading the group's committed offsets is retried when the coordinator is moving or
# loading (a broker restart), before the worker stops with one line: well past the seconds a
# coordinator takes to load its offsets, and liveness beats meanwhile.
COMMITTED_RETRY_SECONDS = 60.0
_COORDINATOR_ERRORS = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
    }
)


def _retriable(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in _COORDINATOR_ERRORS


class PausingConsumer(Protocol):
    """The part of confluent-kafka's ``Consumer`` flow control uses (a fake in unit tests)."""

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def committed(
        self, partitions: list[TopicPartition], timeout: float = ...
    ) -> list[TopicPartition]: ...


class Flow:
    """The worker's pauses, kept in step with the client's."""

    def __init__(
        self,
        beat: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``beat``: liveness, called while the committed offsets are waited on."""
        self.beat, self.clock, self.sleep = beat, clock, sleep
        # Backpressure: partition -> monotonic due time. Replaced whole on every change, never
        # mutated, so the probe thread can read it while the loop works.
        self.paused: dict[TP, float] = {}
        self.holding = False  # every partition paused while a dependency is down
        self.held_since: float | None = None

    def assigned(self, consumer: PausingConsumer, partitions: Sequence[TopicPartition]) -> None:
        """New partitions: paused while the input is held, else explicitly resumed (a pause
        from an earlier ownership would otherwise survive the revoke and silence them)."""
        if not partitions:
            return
        new = {(tp.topic, tp.partition) for tp in partitions}
        self.paused = {k: v for k, v in self.paused.items() if k not in new}
        try:
            if self.holding:
                consumer.pause(list(partitions))
            else:
                consumer.resume(list(partitions))
        except KafkaException as exc:  # partitions the client never knew: nothing to clear
            logger.debug("pause/resume on assign: %s", exc)

    def forget(self, consumer: PausingConsumer, keys: Sequence[TP]) -> None:
        """Partitions revoked or lost: no longer ours, and no longer paused by us."""
        gone = set(keys)
        self.paused = {k: v for k, v in self.paused.items() if k not in gone}
        if keys:
            try:
                consumer.resume([TopicPartition(t, p) for t, p in keys])
            except KafkaException as exc:  # not assigned any more: nothing left to clear
                logger.debug("resume on revoke: %s", exc)

    def hold(self, consumer: PausingConsumer, now: float) -> None:
        """Pause every owned partition until ``release``."""
        consumer.pause(consumer.assignment())
        self.holding, self.held_since = True, now

    def release(self, consumer: PausingConsumer) -> None:
        """Resume what the hold paused; backpressure pauses keep their due time."""
        self.holding, self.held_since = False, None
        again = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in self.paused]
        if again:
            consumer.resume(again)

    def hold_back(
        self, consumer: PausingConsumer, deferred: Sequence[Inbound], until: float
    ) -> list[TP]:
        """Backpressure: each throttled partition rewound to its first deferred message and
        paused until ``until``. Returns the partitions (the caller committed them first)."""
        first = first_offsets(deferred)
        parts = [TopicPartition(t, p, o) for (t, p), o in first.items()]
        consumer.pause(parts)
        for tp in parts:
            consumer.seek(tp)
        self.paused = self.paused | dict.fromkeys(first, until)
        metrics.MESSAGES_DEFERRED.inc(len(deferred))
        return list(first)

    def resume_due(self, consumer: PausingConsumer, now: float) -> None:
        """Backpressure pauses whose time came (not while the input is held)."""
        if not self.paused or self.holding:
            return
        due = [key for key, until in self.paused.items() if until <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            self.paused = {k: v for k, v in self.paused.items() if k not in due}

    def rewind(
        self, consumer: PausingConsumer, messages: Sequence[Inbound], kept: Collection[TP]
    ) -> None:
        """Put each partition of ``kept`` (owned without a break since the batch was taken)
        back to the first message of a dropped batch, so it is read again rather than skipped
        (a cooperative rebalance keeps the positions of the partitions it does not move). A
        partition revoked and assigned again meanwhile restarts from its commit by itself:
        seeking it would skip what lies between."""
        for (t, p), o in first_offsets(messages).items():
            if (t, p) in kept:
                consumer.seek(TopicPartition(t, p, o))

    def restart_from_commit(self, consumer: PausingConsumer, keys: Collection[TP]) -> None:
        """Put ``keys`` back to the group's committed offsets (where a new owner starts): for
        partitions assigned again while a batch of theirs was in hand. A partition whose fetch
        has not started yet answers _STATE: it starts at the commit by itself.

        The read is retried while the coordinator moves or loads (after a broker restart),
        for ``COMMITTED_RETRY_SECONDS``, beating liveness.

        Raises:
            BrokerUnavailable: the committed offsets could not be read within the bound (the
                worker stops with one line; nothing past the commit was committed).
            KafkaException: the read failed with an error retrying cannot heal, or a seek
                failed otherwise.
        """
        if not keys:
            return
        asked = [TopicPartition(t, p) for t, p in sorted(keys)]
        for tp in self._committed(consumer, asked):
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                consumer.seek(TopicPartition(tp.topic, tp.partition, start))
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._STATE:
                    raise
        logger.info("read again from the commit: %s", ",".join(f"{t}[{p}]" for t, p in keys))

    def _committed(
        self, consumer: PausingConsumer, asked: list[TopicPartition]
    ) -> list[TopicPartition]:
        """The committed offsets of ``asked``, retried (bounded) on coordinator errors."""
        deadline = self.clock() + COMMITTED_RETRY_SECONDS
        delay = 0.1
        while True:
            self.beat()
            try:
                got = consumer.committed(asked, timeout=10)
                bad = [tp.error for tp in got if tp.error is not None]
                if bad:
                    raise KafkaException(bad[0])
                return got
            except KafkaException as exc:
                error = exc.args[0]
                if not isinstance(error, KafkaError) or not _retriable(error):
                    raise
                left = deadline - self.clock()
                if left <= 0:
                    raise BrokerUnavailable(
                        f"the group's committed offsets could not be read for "
                        f"{COMMITTED_RETRY_SECONDS:.0f} s: {error.str()}"
                    ) from exc
                logger.warning("committed offsets not read yet, retrying: %s", error.str())
                self.sleep(min(delay, left))
                delay = min(2 * delay, 2.0)

    def overdue(self, now: float, grace: float, owned: Collection[TP]) -> list[TP]:
        """Owned partitions nobody has read for ``grace`` seconds past any decided pause: a
        hold longer than ``grace`` (a dependency still down), or a backpressure pause that
        outlived its due time. The readiness probe fails on them."""
        held_since = self.held_since
        if self.holding and held_since is not None and now - held_since > grace:
            return sorted(owned)
        return sorted(key for key, until in self.paused.items() if now - until > grace)
