"""Which input offsets are safe to commit, from delivery acknowledgements (pure, no Kafka client).

The worker produces a batch's outputs and goes on without waiting. Each partition's share of a
batch is a ``Chunk``: the offsets it covers and how many of its outputs (one prediction or one
dead letter per input) are not yet acknowledged. Every output's delivery callback is its chunk's
``ack``: one bound method per chunk, no allocation per message. A partition's commit position is
the end of its newest chunk that is done with every older chunk done too, so an offset is never
committed past an input whose output Kafka has not acknowledged.

Backpressure re-reads a partition from its first deferred offset: that batch's chunk simply ends
there, and a later chunk starts there again when the messages come back.

>>> t = DeliveryTracker(clock=lambda: 0.0)
>>> a = t.open(("t", 0), first=0, end=3, outputs=3)
>>> b = t.open(("t", 0), first=3, end=5, outputs=2)
>>> for _ in range(2): b.ack(None)
>>> t.positions()  # chunk a still waits: nothing is safe yet
{}
>>> for _ in range(3): a.ack(None)
>>> t.positions()
{('t', 0): 5}
>>> t.positions()  # unchanged since the last call
{}
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TopicPartitionKey = tuple[str, int]


class Chunk:
    """One partition's inputs in one batch: offsets ``[first, end)``, outputs still in flight.

    ``payload`` is the worker's own data about the chunk (what to count once it is done).
    """

    __slots__ = (
        "tp",
        "first",
        "end",
        "outstanding",
        "errors",
        "failed_topics",
        "detached",
        "done_at",
        "payload",
        "_clock",
    )

    def __init__(
        self,
        tp: TopicPartitionKey,
        first: int,
        end: int,
        outputs: int,
        errors: list[tuple[TopicPartitionKey, str]],
        clock: Callable[[], float],
        payload: Any = None,
        failed_topics: list[str | None] | None = None,
    ) -> None:
        if end <= first:
            raise ValueError(f"empty chunk [{first}, {end})")
        self.tp, self.first, self.end, self.outstanding = tp, first, end, outputs
        self.errors = errors  # shared with the tracker: any failure is seen at once
        # per error, the output topic it was for (if known); shared with the tracker too
        self.failed_topics = failed_topics if failed_topics is not None else []
        self.detached = False  # the partition was revoked: late reports change nothing
        self.done_at: float | None = clock() if outputs <= 0 else None
        self.payload = payload
        self._clock = clock

    def ack(self, err: Any, msg: Any = None) -> None:
        """A delivery report (confluent-kafka's ``on_delivery(err, msg)`` signature). A failed
        one is recorded with the topic it was for, when the report says (``msg.topic()``)."""
        if self.detached:
            return
        if err is not None:
            where = msg.topic() if msg is not None and hasattr(msg, "topic") else None
            self.errors.append((self.tp, f"{where}: {err}" if where else str(err)))
            self.failed_topics.append(where)
            self.outstanding = -(10**9)  # never done: the position stops before this chunk
            return
        self.outstanding -= 1
        if self.outstanding == 0:
            self.done_at = self._clock()

    @property
    def done(self) -> bool:
        return self.outstanding == 0


@dataclass
class _Partition:
    chunks: deque[Chunk] = field(default_factory=deque)
    position: int | None = None  # one past the newest chunk that is done, all older ones too
    committed: int | None = None  # the last position handed out for a commit


class DeliveryTracker:
    """Per partition, the chunks in flight, oldest first.

    Args:
        clock: stamps the moment a chunk's last output is acknowledged (``Chunk.done_at``).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._parts: dict[TopicPartitionKey, _Partition] = {}
        self._clock = clock
        self.errors: list[tuple[TopicPartitionKey, str]] = []  # failed deliveries, in order
        self.failed_topics: list[str | None] = []  # per failed delivery, its output topic
        self._completed: list[Chunk] = []

    def open(
        self, tp: TopicPartitionKey, first: int, end: int, outputs: int, payload: Any = None
    ) -> Chunk:
        """Track offsets ``[first, end)`` of ``tp``, with ``outputs`` deliveries due.

        Chunks of one partition are opened in consumption order."""
        chunk = Chunk(
            tp, first, end, outputs, self.errors, self._clock, payload, self.failed_topics
        )
        self._parts.setdefault(tp, _Partition()).chunks.append(chunk)
        return chunk

    def in_flight(self, only: Iterable[TopicPartitionKey] | None = None) -> int:
        """Outputs not yet acknowledged (failed ones excluded)."""
        keys = self._parts if only is None else [k for k in only if k in self._parts]
        return sum(max(c.outstanding, 0) for k in keys for c in self._parts[k].chunks)

    def positions(
        self, only: Iterable[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Commit positions that moved since the last call (for ``only`` partitions, or all).

        A position comes only from a chunk that is done with every older chunk of its
        partition done too, so every consumed offset below it has its output acknowledged.
        """
        keys = list(self._parts) if only is None else [k for k in only if k in self._parts]
        out: dict[TopicPartitionKey, int] = {}
        for tp in keys:
            part = self._parts[tp]
            while part.chunks and part.chunks[0].done:
                chunk = part.chunks.popleft()
                self._completed.append(chunk)
                end = chunk.end
                part.position = end if part.position is None else max(part.position, end)
            if part.position is not None and part.position != part.committed:
                out[tp] = part.committed = part.position
        return out

    def completed(self) -> list[Chunk]:
        """Chunks retired by ``positions`` since the last call (for metrics)."""
        done, self._completed = self._completed, []
        return done

    def uncommit(self, positions: Iterable[TopicPartitionKey]) -> None:
        """A commit of these partitions failed: hand their positions out again next time."""
        for tp in positions:
            part = self._parts.get(tp)
            if part is not None:
                part.committed = None

    def drop_errors(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Forget the failed deliveries of ``partitions`` (an aborted transaction's, when the
        batch is to be written again): they stop nothing."""
        drop = set(partitions)
        kept = [
            (e, t)
            for e, t in zip(self.errors, self.failed_topics, strict=False)
            if e[0] not in drop
        ]
        self.errors[:] = [e for e, _ in kept]
        self.failed_topics[:] = [t for _, t in kept]

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Stop tracking revoked or lost partitions; their late delivery reports are ignored."""
        for tp in partitions:
            part = self._parts.pop(tp, None)
            if part is not None:
                for chunk in part.chunks:
                    chunk.detached = True

    def tracked(self) -> list[TopicPartitionKey]:
        return list(self._parts)
