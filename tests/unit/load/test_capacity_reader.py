"""The capacity reader's tally: distinct events, counted as they come."""

from __future__ import annotations

from load.capacity_reader import Tally


def test_a_duplicate_output_cannot_stand_in_for_a_lost_one() -> None:
    t = Tally()
    t.start(100.0)
    # Three events sent; "b" lost, "a" answered twice (a re-scored batch).
    t.add([("a", 100_000), ("a", 100_000)], 100.010)
    t.add([("c", 100_002)], 100.012)
    assert t.answered == 2
    assert t.duplicates == 1
    assert t.samples == [(100_000, 100.010), (100_002, 100.012)]  # first reads only


def test_a_reused_body_with_its_own_due_time_is_another_event() -> None:
    t = Tally()
    t.start(100.0)
    t.add([("a", 100_000), ("a", 102_500)], 103.0)
    assert (t.answered, t.duplicates) == (2, 0)


def test_only_the_probe_s_own_events_count_and_start_forgets_the_last_probe() -> None:
    t = Tally()
    t.start(100.0)
    t.add([("a", 100_000), ("old", 99_999)], 100.5)
    assert t.answered == 1
    t.start(200.0)
    t.add([("a", 100_000), ("b", 200_001)], 200.5)
    assert (t.answered, t.duplicates, t.samples) == (1, 0, [(200_001, 200.5)])
