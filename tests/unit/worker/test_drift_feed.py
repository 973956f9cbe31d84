"""The worker's drift feed on a multiclass model: the mix of predicted classes moves while the
top class's probability stays the same; each class's probability is watched, the top one's
alone would see nothing."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from services.core.records import Inbound
from services.drift.monitor import DetectorConfig, DriftMonitor
from services.scoring.results import BatchResult, PredictionBlock
from streams.worker.feeds import DriftFeed

CLASSES = ("low", "mid", "high")
SERVING: Any = SimpleNamespace(champion=SimpleNamespace(name="m", version="1"))


def batch(probabilities: np.ndarray, start: int, variant: str = "champion") -> BatchResult:
    n = len(probabilities)
    return BatchResult(
        served=PredictionBlock(
            [Inbound("t", 0, start + i, None, b"") for i in range(n)],
            [{"event_id": f"e{start + i}", "event_time": start + i} for i in range(n)],
            "m",
            ["1"] * n,
            [variant] * n,
            probabilities.max(axis=1),
            [False] * n,
            ((),) * n,
            0,
            probabilities=probabilities,
            classes=CLASSES,
        )
    )


def rows(top: int, n: int) -> np.ndarray:
    """``n`` rows predicting class ``top`` with probability 0.8."""
    out = np.full((n, 3), 0.1)
    out[:, top] = 0.8
    return out


def test_a_move_between_classes_fires_the_class_probabilities_not_the_score() -> None:
    feed = DriftFeed(DriftMonitor({"default": DetectorConfig()}), (), "t", min_rows=1)
    before = np.vstack([rows(0, 1), rows(1, 1)] * 500)  # half low, half mid
    signals = []
    for start in range(0, 1000, 100):
        feed.add(batch(before[start : start + 100], start), 0.0)
        signals += feed.flush(SERVING, 0)
    assert signals == []
    for start in range(1000, 1600, 100):  # from now on every order is high: the top is still 0.8
        feed.add(batch(rows(2, 100), start), 0.0)
        signals += feed.flush(SERVING, 0)
    fired = {s["signal"] for s in signals}
    assert "score" not in fired
    assert fired == {"probability:low", "probability:mid", "probability:high"}
    first = min(s["offset_end"] for s in signals)
    assert 1000 <= first < 1100  # within the first batch after the change


def test_only_the_champions_rows_are_watched_and_a_new_champion_starts_over() -> None:
    monitor = DriftMonitor({"default": DetectorConfig()})
    feed = DriftFeed(monitor, (), "t", min_rows=1)
    feed.add(batch(rows(0, 100), 0), 0.0)
    feed.add(batch(rows(2, 100), 100, variant="canary"), 0.0)  # another model's: not watched
    assert feed.flush(SERVING, 0) == []
    watched = {signal for _, signal in monitor._monitors}
    assert watched == {"score", "probability:low", "probability:mid", "probability:high"}
    assert all(m.seen == 100 for m in monitor._monitors.values())
    feed.reset_predictions()
    assert monitor._monitors == {}


def test_a_batch_without_probabilities_leaves_the_class_signals_unfed() -> None:
    monitor = DriftMonitor({"default": DetectorConfig()})
    feed = DriftFeed(monitor, (), "t", min_rows=1000)
    feed.add(batch(rows(0, 10), 0), 0.0)
    served = batch(rows(0, 10), 10).served
    assert served is not None
    feed.add(BatchResult(served=replace(served, probabilities=None, classes=())), 0.0)
    assert feed.flush(SERVING, 0) == []
    seen = {signal: m.seen for (_, signal), m in monitor._monitors.items()}
    assert seen == {"score": 20} | {f"probability:{c}": 10 for c in CLASSES}


def test_degraded_and_fallback_rows_are_not_watched() -> None:
    """A Redis outage under the degrade policy (every row scored on the spec's defaults,
    flagged degraded) or the fallback ladder (a base rate, a class prior) moves every prediction
    signal: that is an outage, not drift, and the feed leaves those rows out. The event
    fields are watched on every row, as they are the events' own."""
    monitor = DriftMonitor({"default": DetectorConfig()})
    feed = DriftFeed(monitor, ("event_time",), "t", min_rows=1)
    served = batch(rows(0, 10), 0).served
    assert served is not None
    flagged = [i % 2 == 0 for i in range(10)]  # half the batch from the ladder
    feed.add(BatchResult(served=replace(served, degraded=flagged)), 0.0)
    assert feed.flush(SERVING, 0) == []
    seen = {signal: m.seen for (_, signal), m in monitor._monitors.items()}
    assert seen == {"score": 5, "feature:event_time": 10} | {f"probability:{c}": 5 for c in CLASSES}


def test_an_outage_scored_on_defaults_fires_no_prediction_drift() -> None:
    feed = DriftFeed(DriftMonitor({"default": DetectorConfig()}), (), "t", min_rows=1)
    signals = []
    for start in range(0, 1000, 100):
        feed.add(batch(rows(0, 100), start), 0.0)
        signals += feed.flush(SERVING, 0)
    for start in range(1000, 1600, 100):  # Redis down: every row the class prior, degraded
        served = batch(rows(2, 100), start).served
        assert served is not None
        feed.add(BatchResult(served=replace(served, degraded=[True] * 100)), 0.0)
        signals += feed.flush(SERVING, 0)
    assert signals == []
