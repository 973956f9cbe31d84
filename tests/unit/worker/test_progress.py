"""The readiness probe's partitions check beyond the worker's own pauses: a position that
stands still below the high watermark, and a worker left with nothing after a revoke or loss."""

from __future__ import annotations

from streams.worker.progress import Progress, stalled, unassigned

A, B = ("in", 0), ("in", 1)


Sample = tuple[float, dict[tuple[str, int], tuple[int, int]], set[tuple[str, int]]]


def _run(samples: list[Sample]) -> Progress:
    progress = Progress()
    for now, sample, explained in samples:
        progress.observe(now, sample, explained)
    return progress


def test_a_position_standing_still_with_records_above_it_is_named_after_the_grace() -> None:
    progress = _run([(t, {A: (5, 90), B: (7, 90)}, set()) for t in (0.0, 30.0)])
    assert stalled(progress, 60.0, {A, B}) == []  # within the grace
    progress.observe(61.0, {A: (5, 90), B: (20, 90)}, set())  # B moved, A did not
    assert stalled(progress, 60.0, {A, B}) == [A]


def test_a_decided_pause_explains_a_standing_position_and_restarts_the_count() -> None:
    progress = _run([(0.0, {A: (5, 90)}, set()), (61.0, {A: (5, 90)}, {A})])
    assert stalled(progress, 60.0, {A}) == []
    progress.observe(62.0, {A: (5, 90)}, set())  # released: counted from here, not from 0
    assert stalled(progress, 60.0, {A}) == []
    progress.observe(123.0, {A: (5, 90)}, set())
    assert stalled(progress, 60.0, {A}) == [A]


def test_nothing_to_read_or_unknown_offsets_are_not_a_stall() -> None:
    samples = {A: (90, 90), B: (-1001, 90)}  # caught up; no position yet
    progress = _run([(0.0, samples, set()), (300.0, samples, set())])
    assert stalled(progress, 60.0, {A, B}) == []


def test_owning_nothing_after_a_revoke_or_loss_fails_after_the_grace() -> None:
    assert unassigned(emptied_at=0.0, now=30.0, grace=60.0, owned=set(), partitions=6) is None
    assert unassigned(emptied_at=0.0, now=61.0, grace=60.0, owned=set(), partitions=6) == 61.0
    # assigned again since, an empty topic, or never emptied: ready
    assert unassigned(emptied_at=0.0, now=61.0, grace=60.0, owned={A}, partitions=6) is None
    assert unassigned(emptied_at=0.0, now=61.0, grace=60.0, owned=set(), partitions=0) is None
    assert unassigned(emptied_at=None, now=61.0, grace=60.0, owned=set(), partitions=6) is None
