"""What a replay reads: per partition, an offset range; and how far a resumed run has come.

A plan is resolved once (event times become offsets with the broker's ``offsets_for_times``)
and kept with the run, so that the same command, run again after an interruption, reads the
same ranges from where its consumer group committed, even if the topic has grown since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Range:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        """Offsets in the range (transaction markers included, so an upper bound on events)."""
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class ReplayPlan:
    """One replay: the source ranges, where the outputs go, with which model (copy when None)."""

    run_id: str
    source: str
    ranges: tuple[Range, ...]
    target: str
    model: str | None = None  # the version re-scoring uses (an alias is resolved once)
    dead_letters: str | None = None  # where re-scoring's refusals go
    window: tuple[int | None, int | None] = (None, None)  # the event-time window asked for
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(r.count for r in self.ranges)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReplayPlan:
        d = json.loads(text)
        d["ranges"] = tuple(Range(**r) for r in d["ranges"])
        d["window"] = tuple(d["window"])
        return cls(**d)


def run_id(parts: Mapping[str, Any]) -> str:
    """A short stable id for a replay command: the same arguments give the same id, so running
    the same command again resumes it.

    >>> run_id({"source": "a", "to": "b"}) == run_id({"to": "b", "source": "a"})
    True
    >>> run_id({"source": "a"}) == run_id({"source": "b"})
    False
    """
    text = json.dumps(dict(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_offsets(text: str) -> Range:
    """``P:START-END`` (END exclusive), ``P:START-`` (to the end) or ``P:START``.

    >>> parse_offsets("2:100-250")
    Range(partition=2, start=100, end=250)
    >>> parse_offsets("0:5-").end
    -1
    """
    try:
        partition, _, span = text.strip().partition(":")
        start, dash, end = span.partition("-")
        r = Range(int(partition), int(start), int(end) if end else -1)
    except ValueError:
        raise ValueError(f"{text!r}: give PARTITION:START-END (END exclusive)") from None
    if r.partition < 0 or r.start < 0 or (dash and end and r.end < r.start):
        raise ValueError(f"{text!r}: offsets must be >= 0 and END >= START")
    return r


def clamp(
    wanted: Sequence[Range], watermarks: Mapping[int, tuple[int, int]]
) -> tuple[list[Range], list[str]]:
    """Ranges cut to what the partitions hold (low to high watermark); an end of -1 means the
    high watermark. Returns the ranges and a note per range cut or dropped.

    >>> clamp([Range(0, 0, 50), Range(1, 0, -1), Range(7, 0, 5)], {0: (10, 40), 1: (0, 9)})
    ([Range(partition=0, start=10, end=40), Range(partition=1, start=0, end=9)], \
['partition 0: 10-40 held, not 0-50', 'partition 7: not in the topic'])
    """
    out, notes = [], []
    for r in wanted:
        if r.partition not in watermarks:
            notes.append(f"partition {r.partition}: not in the topic")
            continue
        low, high = watermarks[r.partition]
        end = high if r.end < 0 else min(r.end, high)
        start = max(r.start, low)
        if (start, end) != (r.start, r.end) and r.end >= 0:
            notes.append(f"partition {r.partition}: {start}-{end} held, not {r.start}-{r.end}")
        if start < end:
            out.append(Range(r.partition, start, end))
    return out, notes


def remaining(plan: ReplayPlan, committed: Mapping[int, int]) -> list[Range]:
    """The part of each range not yet done: a committed offset (the next to read) moves its
    start; a partition without a commit (negative) starts at the beginning of its range.

    >>> p = ReplayPlan("x", "t", (Range(0, 10, 20), Range(1, 0, 5)), "out")
    >>> remaining(p, {0: 15, 1: -1001})
    [Range(partition=0, start=15, end=20), Range(partition=1, start=0, end=5)]
    >>> remaining(p, {0: 20, 1: 5})
    []
    """
    out = []
    for r in plan.ranges:
        at = committed.get(r.partition, -1)
        rest = replace(r, start=max(r.start, at)) if at >= 0 else r
        if rest.count:
            out.append(rest)
    return out
