"""Online drift detection per partition and signal, with the evidence to act on (pure).

One River detector per (partition, signal): ADWIN (adaptive window; the default, it also says
how far back the change starts) or PageHinkley (cumulative deviation; good for slow ramps).
Updates cost well under a microsecond each (broker-notes: ADWIN 0.17 µs, PageHinkley 0.39 µs),
so the scoring worker feeds every served score and every watched feature value.

A firing carries evidence: the signal's mean/std before the change (everything since the last
firing, up to where the detector places the change) and after it, and the offset and time range
of the events after the change, at batch granularity, so ops can replay exactly that window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from river import drift

Kind = Literal["adwin", "page_hinkley"]
RECENT_EVENTS = 1000  # "after" statistics: the newest batches covering about this many events


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """A detector kind and its parameters; defaults are the measured ones (docs/drift.md)."""

    kind: Kind = "adwin"
    adwin_delta: float = 1e-5
    ph_threshold: float = 50.0
    ph_delta: float = 0.005
    min_events: int = 1000  # after a firing, flags are ignored for this many events (debounce)

    def build(self) -> Any:
        if self.kind == "adwin":
            return drift.ADWIN(delta=self.adwin_delta)  # type: ignore[no-untyped-call]  # River is untyped
        return drift.PageHinkley(threshold=self.ph_threshold, delta=self.ph_delta)

    @property
    def name(self) -> str:
        return "ADWIN" if self.kind == "adwin" else "PageHinkley"


@dataclass
class _Running:
    """Mean and variance, merged batch by batch (Chan et al.'s parallel update)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add_many(self, xs: npt.NDArray[np.float64]) -> None:
        if len(xs) == 0:
            return
        n_b, mean_b = len(xs), float(xs.mean())
        m2_b = float(((xs - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """One firing: where, what, and the numbers before and after."""

    signal: str
    detector: str
    partition: int
    offset_start: int
    offset_end: int
    time_start_ms: int
    time_end_ms: int
    stats_before: dict[str, float]
    stats_after: dict[str, float]
    events_seen: int  # since the previous firing (or the start)


@dataclass
class SignalMonitor:
    """One detector on one signal of one partition."""

    config: DetectorConfig
    signal: str
    partition: int
    detector: Any = None
    seen: int = 0
    quiet_left: int = 0  # flags ignored for this many more events (set after a firing)
    before: _Running = field(default_factory=_Running)
    recent: deque[tuple[int, int, int, int, int, float, int]] = field(default_factory=deque)
    # per observed batch: first offset, last offset, first time, last time, events,
    # sum and count of its finite values

    def __post_init__(self) -> None:
        self.detector = self.config.build()

    def observe(
        self, values: Sequence[float], offsets: Sequence[int], times_ms: Sequence[int]
    ) -> Evidence | None:
        """Feed one batch of this partition; returns the evidence if the detector fired.

        ``values``, ``offsets`` and ``times_ms`` are aligned; non-finite values are skipped
        (a missing feature is not a drift).
        """
        arr = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(arr)
        xs = arr[keep]
        positions = np.nonzero(keep)[0]
        fired: int | None = None  # index into xs
        update, quiet = self.detector.update, self.quiet_left
        for i, x in enumerate(xs.tolist()):
            update(x)
            if self.detector.drift_detected and i + 1 > quiet:
                fired = i
                break
        self.quiet_left = max(0, quiet - len(xs)) if fired is None else 0
        if len(arr):
            upto = xs if fired is None else xs[: fired + 1]
            self.recent.append(
                (
                    offsets[0],
                    offsets[-1],
                    min(times_ms),
                    max(times_ms),
                    len(arr),
                    float(upto.sum()),
                    len(upto),
                )
            )
            while len(self.recent) > 10_000:
                self.recent.popleft()
        if fired is None:
            self.seen += len(xs)
            self.before.add_many(xs)
            return None
        self.seen += fired + 1
        self.before.add_many(xs[: fired + 1])
        at = int(positions[fired])
        evidence = self._evidence(offsets[at], times_ms[at])
        # Start over: the new regime is the reference for the next change.
        self.detector = self.config.build()
        self.before = _Running()
        rest = xs[fired + 1 :]
        for x in rest.tolist():
            self.detector.update(x)
        self.before.add_many(rest)
        self.seen = len(rest)
        self.quiet_left = max(0, self.config.min_events - len(rest))
        self.recent.clear()
        return evidence

    def _evidence(self, offset_end: int, time_end_ms: int) -> Evidence:
        width = int(getattr(self.detector, "width", 0) or 0)
        if self.config.kind != "adwin" or width <= 0:
            width = min(self.seen, 1000)  # PageHinkley does not say: the last 1000 events
        after_mean = float(getattr(self.detector, "estimation", float("nan")))
        # Walk back through the observed batches until the change window is covered.
        covered, start_offset, start_time = 0, offset_end, time_end_ms
        recent_sum, recent_n = 0.0, 0
        for first, _last, t0, _t1, count, total, finite in reversed(self.recent):
            start_offset, start_time = first, t0
            covered += count
            if recent_n < RECENT_EVENTS:
                recent_sum, recent_n = recent_sum + total, recent_n + finite
            if covered >= width:
                break
        n_before = max(self.before.n - width, 0)
        mean_before = (
            (self.before.mean * self.before.n - after_mean * width) / n_before
            if n_before and math.isfinite(after_mean)
            else self.before.mean
        )
        return Evidence(
            self.signal,
            self.config.name,
            self.partition,
            start_offset,
            offset_end,
            start_time,
            time_end_ms,
            {"mean": mean_before, "std": self.before.std, "count": float(n_before)},
            {
                "mean": recent_sum / recent_n if recent_n else after_mean,
                "count": float(width),
            }
            | ({"window_mean": after_mean} if math.isfinite(after_mean) else {}),
            self.seen,
        )


class DriftMonitor:
    """All signals of all partitions a worker serves."""

    def __init__(self, configs: dict[str, DetectorConfig]) -> None:
        self.configs = configs
        self._monitors: dict[tuple[int, str], SignalMonitor] = {}

    def observe(
        self,
        partition: int,
        signal: str,
        values: Sequence[float],
        offsets: Sequence[int],
        times_ms: Sequence[int],
    ) -> Evidence | None:
        key = (partition, signal)
        monitor = self._monitors.get(key)
        if monitor is None:
            config = self.configs.get(signal) or self.configs["default"]
            monitor = self._monitors[key] = SignalMonitor(config, signal, partition)
        return monitor.observe(values, offsets, times_ms)

    def reset(self, signal: str) -> None:
        """Forget ``signal`` everywhere (the score's distribution changes by design when the
        champion changes: that is not drift)."""
        for key in [k for k in self._monitors if k[1] == signal]:
            del self._monitors[key]
