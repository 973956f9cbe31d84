"""Whether each owned partition is being read: for the readiness probe's ``partitions`` check.

The worker's own pause records (``Flow.overdue``) only see the pauses it decided. A partition
can also stop for reasons it never recorded: a fetch that stopped after a broker restart, a
pause the client kept, or a group that lost the worker and never assigned it anything again.
So the loop samples each owned partition's position and high watermark (``observe``, from the
client's cached values, with the lag sample) and ``stalled`` names a partition whose position
has not moved for longer than a grace while records wait above it and no decided pause
explains it, and ``unassigned`` a worker left with nothing since its partitions were revoked
or lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from streams.worker.flow import TP


@dataclass
class Progress:
    """Per partition: its last position, and since when (a sample time) it has waited at that
    position with records above it. Replaced whole on each sample: the probe thread reads it."""

    since: dict[TP, tuple[int, float]] = field(default_factory=dict)
    sampled_at: float | None = None

    def observe(
        self,
        now: float,
        sample: Mapping[TP, tuple[int, int]],
        explained: Collection[TP],
    ) -> None:
        """``sample``: owned partition -> (position, high watermark); negative values are not
        known yet. ``explained``: partitions paused by a decision (a hold, backpressure).

        >>> p = Progress()
        >>> p.observe(0.0, {("t", 0): (5, 9)}, ())
        >>> p.observe(50.0, {("t", 0): (5, 9)}, ())
        >>> p.since
        {('t', 0): (5, 0.0)}
        >>> p.observe(60.0, {("t", 0): (7, 9)}, ())
        >>> p.since
        {('t', 0): (7, 60.0)}
        """
        waiting: dict[TP, tuple[int, float]] = {}
        for key, (position, high) in sample.items():
            if key in explained or position < 0 or high < 0 or high <= position:
                continue  # paused on purpose, not known yet, or nothing to read
            before = self.since.get(key)
            same = before is not None and before[0] == position
            waiting[key] = (position, before[1] if same and before else now)
        self.since = waiting
        self.sampled_at = now


def stalled(progress: Progress, grace: float, owned: Collection[TP]) -> list[TP]:
    """Owned partitions whose position stood still, records above it, for longer than
    ``grace`` seconds of samples (measured between samples, so a loop that stops sampling
    is liveness's business, not this).

    >>> p = Progress()
    >>> p.observe(0.0, {("t", 0): (5, 9), ("t", 1): (3, 3)}, ())
    >>> p.observe(61.0, {("t", 0): (5, 9), ("t", 1): (3, 3)}, ())
    >>> stalled(p, 60.0, {("t", 0), ("t", 1)})
    [('t', 0)]
    >>> stalled(p, 60.0, {("t", 1)})  # revoked since: not ours to judge
    []
    """
    last = progress.sampled_at
    if last is None:
        return []
    waits = progress.since.items()
    return sorted(key for key, (_pos, since) in waits if key in owned and last - since > grace)


def unassigned(
    emptied_at: float | None, now: float, grace: float, owned: Collection[TP], partitions: int
) -> float | None:
    """Seconds this worker has owned nothing since its partitions were revoked or lost with
    no assignment since (``emptied_at``), when that is longer than ``grace`` and the input
    topic has partitions; else None. A worker that a completed rebalance left with nothing
    (more workers than partitions) got an assignment, if empty, and is not counted.

    >>> unassigned(10.0, 100.0, 60.0, set(), 6)
    90.0
    >>> unassigned(10.0, 100.0, 60.0, {("t", 0)}, 6) is None
    True
    >>> unassigned(None, 100.0, 60.0, set(), 6) is None
    True
    """
    if emptied_at is None or owned or partitions <= 0:
        return None
    waited = now - emptied_at
    return waited if waited > grace else None
