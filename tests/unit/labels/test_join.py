"""The label join: matched and unmatched labels, error stream, quality per version/variant."""

from __future__ import annotations

import numpy as np

from services.labels.join import QualityBook, join, log_loss_one
from services.labels.store import Stored, decode, encode


def _label(i: int, engaged: bool) -> tuple[int, int, dict[str, object]]:
    return (
        i % 3,
        i,
        {"event_id": f"e{i}", "engaged": engaged, "event_time": 1000, "label_time": 4000},
    )


def test_join_counts_unmatched_and_keeps_shadow() -> None:
    labels = [_label(i, i % 2 == 0) for i in range(4)]
    served = [
        Stored("1", "champion", 0.8),
        None,
        Stored("2", "challenger", 0.3),
        Stored("1", "champion", 0.1),
    ]
    shadow = [Stored("3", "shadow", 0.7), None, None, None]
    joined, unmatched = join(labels, served, shadow)
    assert unmatched == 1 and [j.event_id for j in joined] == ["e0", "e2", "e3"]
    assert joined[0].shadow == Stored("3", "shadow", 0.7) and joined[0].label_lag_ms == 3000
    assert joined[2].error == log_loss_one(0.1, False)


def test_quality_book_separates_versions_and_windows() -> None:
    rng = np.random.default_rng(0)
    book = QualityBook(window=1000)
    y = rng.random(3000) < 0.3
    good = np.where(y, 0.7, 0.2)
    labels = [_label(i, bool(y[i])) for i in range(3000)]
    served = [Stored("1", "champion", float(good[i])) for i in range(3000)]
    shadow = [Stored("2", "shadow", 0.3) for _ in range(3000)]
    joined, _ = join(labels, served, shadow)
    book.add(joined[:1500], now_ms=10)
    book.add(joined[1500:], now_ms=20)
    champion, flat = book.quality("1", "champion"), book.quality("2", "shadow")
    assert champion["count"] == 1000  # the window keeps the newest
    assert champion["auc"] == 1.0 and flat["auc"] == 0.5  # a constant score ranks nothing
    assert champion["log_loss"] < flat["log_loss"]
    assert book.quality("1", "champion", since_ms=20)["count"] == 1000
    assert book.quality("9", "champion") == {"count": 0.0}


def test_stored_predictions_round_trip_and_garbage_is_none() -> None:
    s = Stored("12", "shadow", 0.123456789)
    assert decode(encode(s)) == s
    assert decode(b"not|a") is None and decode(None) is None


def test_quality_can_be_read_while_labels_are_added() -> None:
    """The promotion check reads on an executor thread while the label agent appends: without
    the book's lock, iterating a deque another thread appends to raises RuntimeError."""
    import sys
    import threading
    import time

    book = QualityBook(window=50_000)
    labels = [_label(i, i % 3 == 0) for i in range(200)]
    joined, _ = join(labels, [Stored("1", "champion", 0.4)] * 200, [None] * 200)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            book.add(joined, now_ms=1)
            time.sleep(0.0005)  # a label batch now and then, as the agent adds them

    thread = threading.Thread(target=writer, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a race shows in a few reads
    thread.start()
    try:
        for _ in range(40):
            assert book.quality("1", "champion")["count"] > 0
            assert book.keys() == [("1", "champion")]
    finally:
        stop.set()
        thread.join(10)
        sys.setswitchinterval(switch)
