"""The worker's side of the dependency gate (``services.scoring.gate.GateShell``): while Redis or
the schema registry does not answer, input is held (every partition paused), delivery reports and
commits go on, group membership is kept, and a rebalance or a stop abandons the batch."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from streams.worker.flow import Flow
from streams.worker.membership import Membership


class HeldInput:
    """One batch's view of the worker while the gate waits on a dependency."""

    def __init__(
        self,
        *,
        flow: Flow,
        membership: Membership,
        producer: Producer,
        stopping: Callable[[], bool],
        clock: Callable[[], float],
        beat: Callable[[], None],
        revokes: int,
    ) -> None:
        self.flow, self.membership, self.producer = flow, membership, producer
        self.stopping, self.clock, self.beat, self.revokes = stopping, clock, beat, revokes

    def abandoned(self) -> bool:
        """A rebalance took partitions since the batch was taken (their next owner reads them
        from the last commit), or a stop came while the input is held (the batch cannot
        finish). A stop otherwise lets the batch in hand finish and be published."""
        revoked = self.membership.revokes != self.revokes
        return revoked or (self.flow.holding and self.stopping())

    def hold(self, dependency: str, error: Exception) -> None:
        self.flow.hold(self.membership.consumer, self.clock())

    def release(self) -> None:
        self.flow.release(self.membership.consumer)

    def wait(self, seconds: float) -> None:
        """A bounded wait inside a batch: delivery reports and acknowledged commits go on, and
        liveness knows we are waiting, not stuck. While input is held the consumer is polled
        too, so the group membership is kept and rebalances run."""
        deadline = time.monotonic() + seconds
        while not self.stopping():
            self.beat()
            now = time.monotonic()
            if now >= deadline:
                return
            self.producer.poll(0)
            self.membership.commit_if_due(now)
            if self.flow.holding:
                consumer = self.membership.consumer
                # Paused partitions return nothing; should one come (a partition assigned
                # meanwhile), its position is put back: it is read again, never skipped.
                # Paused partitions return nothing: what comes is from a partition assigned
                # meanwhile, read from its commit; it goes back there (read again, not skipped).
                got = consumer.consume(num_messages=100, timeout=min(0.1, deadline - now))
                came = {(m.topic() or "", m.partition() or 0) for m in got if m.error() is None}
                self.flow.restart_from_commit(consumer, came & self.membership.owned())
            else:
                self.producer.poll(min(0.05, deadline - now))
