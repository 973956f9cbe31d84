"""The label join: matched and unmatched labels, error stream, quality per version/variant."""

from __future__ import annotations

import numpy as np

from services.labels.join import QualityBook, join, log_loss_one
from services.labels.store import Stored, decode, encode


def _label(i: int, engaged: bool) -> tuple[int, int, dict[str, object]]:
    return (
        i % 3,
        i,
        {"event_id": f"e{i}", "engaged": engaged, "event_time": 1000 + i, "label_time": 4000 + i},
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
    joined, unmatched = join(labels, served, shadow, "engaged")
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
    joined, _ = join(labels, served, shadow, "engaged")
    book.add(joined[:1500])
    book.add(joined[1500:])
    champion, flat = book.quality("1", "champion"), book.quality("2", "shadow")
    assert champion["count"] == 1000  # the window keeps the newest
    assert champion["auc"] == 1.0 and flat["auc"] == 0.5  # a constant score ranks nothing
    assert champion["log_loss"] < flat["log_loss"]
    # Filtered by the event's time, not by when the label was joined.
    assert book.quality("1", "champion", since_ms=1000 + 2500)["count"] == 500
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
    joined, _ = join(labels, [Stored("1", "champion", 0.4)] * 200, [None] * 200, "engaged")
    stop, added = threading.Event(), threading.Event()

    def writer() -> None:
        while not stop.is_set():
            book.add(joined)
            added.set()
            time.sleep(0.0005)  # a label batch now and then, as the agent adds them

    thread = threading.Thread(target=writer, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a race shows in a few reads
    thread.start()
    try:
        # The first batch in before the first read (on a loaded machine the writer may not
        # have run yet); the reads then race the appends that follow.
        assert added.wait(30)
        for _ in range(40):
            assert book.quality("1", "champion")["count"] > 0
            assert book.keys() == [("1", "champion")]
    finally:
        stop.set()
        thread.join(10)
        sys.setswitchinterval(switch)


def test_paired_quality_compares_the_same_events_only() -> None:
    """Hand-computed: the champion scores 0.5 on every event, the challenger 0.9 on the events
    it shadowed; events only the champion scored (before the shadow) are not in the pairing."""
    labels = [_label(i, True) for i in range(6)]
    served = [Stored("1", "champion", 0.5)] * 6
    shadow = [None, None, None, Stored("2", "shadow", 0.9), Stored("2", "shadow", 0.9), None]
    shadow[5] = Stored("2", "shadow", 0.9)
    joined, _ = join(labels, served, shadow, "engaged")
    book = QualityBook()
    book.add(joined)
    paired = book.paired_quality("1", "2")
    assert paired["count"] == 3
    assert abs(paired["champion_log_loss"] - (-np.log(0.5))) < 1e-12
    assert abs(paired["challenger_log_loss"] - (-np.log(0.9))) < 1e-12
    assert book.quality("1", "champion")["count"] == 6  # the unpaired view keeps all six
    assert book.paired_quality("1", "2", since_ms=1000 + 5)["count"] == 1


def test_prune_forgets_versions_that_no_longer_serve() -> None:
    labels = [_label(i, i % 2 == 0) for i in range(10)]
    joined, _ = join(
        labels, [Stored("1", "champion", 0.4)] * 10, [Stored("2", "shadow", 0.6)] * 10, "engaged"
    )
    book = QualityBook()
    book.add(joined)
    assert book.keys() == [("1", "champion"), ("2", "shadow")] and book.rows() == 30
    assert book.prune({"2"}) == [("1", "champion")]
    assert book.keys() == [("2", "shadow")] and book.rows() == 10  # the pairing went with v1


def test_the_book_follows_the_task() -> None:
    """Regression: the error is the absolute error and quality is MAE, RMSE and bias.
    Multiclass: the error is minus the log of the true class's stored probability, and quality
    is log loss and accuracy; the paired comparison a promotion reads carries the task's loss."""
    from services.core.task import Task

    regression = Task("regression")
    rows = [(0, i, {"event_id": f"e{i}", "minutes": 20.0 + i, "event_time": i, "label_time": i})
            for i in range(4)]  # fmt: skip
    served = [Stored("1", "champion", 21.0 + i) for i in range(4)]  # one minute over each time
    shadow = [Stored("2", "shadow", 20.0 + i) for i in range(4)]  # exact
    joined, _ = join(rows, served, shadow, "minutes", task=regression)
    assert [j.error for j in joined] == [1.0] * 4
    book = QualityBook(task=regression)
    book.add(joined)
    assert book.quality("1", "champion") == {"count": 4.0, "mae": 1.0, "rmse": 1.0, "bias": 1.0}
    paired = book.paired_quality("1", "2")
    assert (paired["champion_mae"], paired["challenger_mae"]) == (1.0, 0.0)

    three = Task("multiclass", ("a", "b", "c"))
    rows = [(0, i, {"event_id": f"e{i}", "band": "abc"[i % 3], "event_time": i, "label_time": i})
            for i in range(3)]  # fmt: skip
    probs = (0.5, 0.25, 0.25)  # always says "a": right once in three
    served = [Stored("1", "champion", 0.5, probabilities=probs)] * 3
    joined, _ = join(rows, served, [None] * 3, "band", task=three)
    assert [j.outcome for j in joined] == [0, 1, 2]
    np.testing.assert_allclose([j.error for j in joined], -np.log([0.5, 0.25, 0.25]))
    book = QualityBook(task=three)
    book.add(joined)
    q = book.quality("1", "champion")
    assert q["accuracy"] == 1 / 3 and abs(q["log_loss"] + np.log([0.5, 0.25, 0.25]).mean()) < 1e-12


def test_stored_class_probabilities_round_trip() -> None:
    s = Stored("4", "champion", 0.6, False, (), (0.6, 0.3, 0.1))
    assert decode(encode(s)) == s
