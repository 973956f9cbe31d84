"""Drift monitors: quiet on a stationary stream, fire on a shift with replayable evidence."""

from __future__ import annotations

import numpy as np

from services.drift.monitor import DetectorConfig, DriftMonitor, SignalMonitor
from services.drift.signals import drift_signal


def _feed(m: SignalMonitor, x: np.ndarray, batch: int = 500, start: int = 0) -> list:  # type: ignore[type-arg]
    fired = []
    for b in range(0, len(x), batch):
        offsets = list(range(start + b, start + b + len(x[b : b + batch])))
        times = [1_000_000 + o * 10 for o in offsets]
        e = m.observe(x[b : b + batch], offsets, times)
        if e is not None:
            fired.append(e)
    return fired


def test_stationary_stream_is_quiet() -> None:
    rng = np.random.default_rng(1)
    m = SignalMonitor(DetectorConfig(), "score", 0)
    assert _feed(m, rng.beta(2, 6, size=300_000)) == []


def test_a_shift_fires_soon_with_evidence_pointing_at_it() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0.25, 0.1, 30_000), rng.normal(0.32, 0.1, 30_000)])
    (e, *rest) = _feed(SignalMonitor(DetectorConfig(), "score", 3), x)
    assert 30_000 <= e.offset_end < 30_000 + 5_000  # detected within 5,000 events of onset
    assert e.offset_start <= 30_000 <= e.offset_end  # the replay window covers the onset
    assert e.time_start_ms == 1_000_000 + e.offset_start * 10
    assert abs(e.stats_before["mean"] - 0.25) < 0.01
    assert e.stats_after["mean"] > e.stats_before["mean"] + 0.01  # the direction of the shift
    assert (e.partition, e.signal, e.detector) == (3, "score", "ADWIN")
    record = drift_signal(e, "feed.interactions.v1", "engagement", "4", 123)
    assert record["offset_start"] == e.offset_start and record["model_version"] == "4"
    assert rest == []  # and then quiet again in the new regime


def test_missing_values_are_skipped_not_drift() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(5, 1, 50_000)
    x[rng.random(50_000) < 0.3] = np.nan
    assert _feed(SignalMonitor(DetectorConfig(), "feature:rtt", 0), x) == []


def test_page_hinkley_and_reset() -> None:
    rng = np.random.default_rng(4)
    # PageHinkley's threshold is in the signal's units: scores-like values, a large jump.
    x = np.concatenate([rng.normal(0.25, 0.1, 20_000), rng.normal(0.6, 0.1, 5_000)])
    config = DetectorConfig(kind="page_hinkley")
    (e, *_) = _feed(SignalMonitor(config, "score", 0), x)
    assert e.detector == "PageHinkley" and 20_000 <= e.offset_end < 25_000
    assert "window_mean" not in e.stats_after  # PageHinkley keeps no window
    monitors = DriftMonitor({"default": config})
    assert monitors.observe(0, "score", x[:100], list(range(100)), list(range(100))) is None
    monitors.reset("score")
    assert monitors._monitors == {}
