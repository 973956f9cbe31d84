"""The commit invariant as a property: over random interleavings of batches, deliveries (in any
order), failed deliveries, backpressure deferrals and revocations, a commit position never passes
a consumed offset whose output is not acknowledged, and once everything is acknowledged the
position reaches the end of what was handled.

The oracle is independent of the tracker: a set of acknowledged offsets per partition."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.kafka.tracker import Chunk, DeliveryTracker

PARTITIONS = (("in", 0), ("in", 1))

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("batch"),
            st.sampled_from(PARTITIONS),
            st.integers(1, 6),  # messages
            st.integers(0, 6),  # deferred suffix
            st.integers(0, 2),  # gap before the batch (transaction markers, compaction)
        ),
        st.tuples(st.just("ack"), st.integers(0, 10**6)),
        st.tuples(st.just("fail"), st.integers(0, 10**6)),
        st.tuples(st.just("commit"), st.booleans()),
        st.tuples(st.just("revoke"), st.sampled_from(PARTITIONS)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(ops, st.randoms(use_true_random=False))
# A re-read that stops short of what was read before: no gap may follow it (the model once
# skipped offset 1 here, a history no broker produces).
@example(
    [("batch", ("in", 0), 2, 2, 0), ("batch", ("in", 0), 1, 0, 0), ("batch", ("in", 0), 1, 0, 1)],
    random.Random(0),  # noqa: S311 (a test's shuffle)
)
def test_never_commits_past_an_unacknowledged_input(plan: list[tuple], rnd: random.Random) -> None:
    tracker = DeliveryTracker(clock=lambda: 0.0)
    fetch = {tp: 0 for tp in PARTITIONS}  # the consumer's next offset per partition
    committed = {tp: 0 for tp in PARTITIONS}
    consumed: dict[tuple[str, int], set[int]] = {tp: set() for tp in PARTITIONS}
    acked: dict[tuple[str, int], set[int]] = {tp: set() for tp in PARTITIONS}
    pending: list[tuple[Chunk, tuple[str, int], int]] = []  # (chunk, tp, offset) outputs in flight
    failed: set[tuple[str, int]] = set()
    rewound: set[tuple[str, int]] = set()
    handled_end: dict[tuple[str, int], int] = {}
    # Per partition, the handled chunks in order (end, offsets) since it was last assigned,
    # and the offsets whose output failed: the oracle of where a commit must reach.
    chunks: dict[tuple[str, int], list[tuple[int, set[int]]]] = {tp: [] for tp in PARTITIONS}
    failed_at: dict[tuple[str, int], set[int]] = {tp: set() for tp in PARTITIONS}

    def check(positions: dict[tuple[str, int], int]) -> None:
        for tp, pos in positions.items():
            below = {o for o in consumed[tp] if o < pos}
            assert below <= acked[tp], f"{tp}: commit {pos} passes unacked {below - acked[tp]}"
            committed[tp] = pos

    def reaches(chosen: tuple[tuple[str, int], ...]) -> None:
        """Liveness after each commit: a chosen partition's commit reaches the end of the
        longest run of its chunks whose every output is acknowledged."""
        for tp in chosen:
            end = None
            for stop, offsets in chunks[tp]:
                if not offsets <= acked[tp] or offsets & failed_at[tp]:
                    break
                end = stop
            if end is not None:
                assert committed[tp] == end, f"{tp}: committed {committed[tp]}, acked to {end}"

    for op in plan:
        if op[0] == "batch":
            _, tp, n, deferred, gap = op
            # A gap (offsets with no record) can only lie ahead of new data, never where a
            # deferred message is waiting to be read again (right after a rewind, or further on
            # when a re-read stopped short of what had been read before).
            seen_end = max(consumed[tp], default=-1) + 1
            start = fetch[tp] + (0 if tp in rewound or fetch[tp] < seen_end else gap)
            rewound.discard(tp)
            offsets = list(range(start, start + n))
            consumed[tp].update(offsets)
            handled = offsets[: max(0, n - deferred)]
            if handled:
                chunk = tracker.open(tp, handled[0], handled[-1] + 1, len(handled))
                pending.extend((chunk, tp, o) for o in handled)
                chunks[tp].append((handled[-1] + 1, set(handled)))
                handled_end[tp] = max(handled_end.get(tp, 0), handled[-1] + 1)
            # Deferred messages are re-read: the fetch position rewinds to the first of them.
            if len(handled) < n:
                fetch[tp] = offsets[len(handled)]
                rewound.add(tp)
            else:
                fetch[tp] = offsets[-1] + 1
        elif op[0] in ("ack", "fail") and pending:
            chunk, tp, offset = pending.pop(op[1] % len(pending))
            if op[0] == "ack":
                chunk.ack(None)
                if not chunk.detached:
                    acked[tp].add(offset)
            else:
                chunk.ack("MSG_TIMED_OUT")
                failed.add(tp)
                failed_at[tp].add(offset)
        elif op[0] == "commit":
            chosen = PARTITIONS[:1] if op[1] else PARTITIONS
            check(tracker.positions(chosen if op[1] else None))
            reaches(chosen)
        elif op[0] == "revoke":
            tp = op[1]
            check(tracker.positions([tp]))  # the worker commits a revoked partition first
            reaches((tp,))
            tracker.forget([tp])
            chunks[tp], failed_at[tp] = [], set()
            pending = [p for p in pending if p[1] != tp]
            # Reassigned later: consumption restarts at the committed offset, and what lies
            # past it was never safely done, so it is consumed (and acknowledged) anew.
            fetch[tp] = committed[tp]
            rewound.add(tp)
            consumed[tp] = {o for o in consumed[tp] if o < committed[tp]}
            acked[tp] = {o for o in acked[tp] if o < committed[tp]}
            handled_end.pop(tp, None)
            failed.discard(tp)

    # Liveness: acknowledge everything left; each partition without a failure reaches the end
    # of what it handled.
    rnd.shuffle(pending)
    for chunk, tp, offset in pending:
        chunk.ack(None)
        acked[tp].add(offset)
    check(tracker.positions())
    reached = 0
    for tp in PARTITIONS:
        if tp not in failed and tp in handled_end:
            assert committed[tp] == handled_end[tp], (tp, committed[tp], handled_end[tp])
            reached += 1
    if any(op[0] == "batch" for op in plan) and not failed:
        # the liveness half ran for every partition that handled anything
        assert reached == len(handled_end)


def test_a_failed_delivery_holds_its_partition_and_is_reported() -> None:
    tracker = DeliveryTracker(clock=lambda: 0.0)
    a = tracker.open(("t", 0), 0, 2, 2)
    b = tracker.open(("t", 0), 2, 4, 2)
    a.ack(None)
    a.ack("MSG_SIZE_TOO_LARGE")
    b.ack(None)
    b.ack(None)
    assert tracker.positions() == {}
    assert tracker.errors == [(("t", 0), "MSG_SIZE_TOO_LARGE")]


def test_late_reports_for_a_revoked_partition_change_nothing() -> None:
    tracker = DeliveryTracker(clock=lambda: 0.0)
    a = tracker.open(("t", 0), 0, 1, 1)
    tracker.forget([("t", 0)])
    a.ack("boom")
    assert tracker.errors == [] and tracker.positions() == {}


def test_a_failed_commit_is_handed_out_again() -> None:
    tracker = DeliveryTracker(clock=lambda: 0.0)
    tracker.open(("t", 0), 5, 7, 1).ack(None)
    assert tracker.positions() == {("t", 0): 7}
    tracker.uncommit([("t", 0)])
    assert tracker.positions() == {("t", 0): 7}


def test_done_chunks_are_stamped_and_retired_once() -> None:
    now = [10.0]
    tracker = DeliveryTracker(clock=lambda: now[0])
    chunk = tracker.open(("t", 0), 0, 1, 1, payload="p")
    now[0] = 11.5
    chunk.ack(None)
    tracker.positions()
    assert [(c.payload, c.done_at) for c in tracker.completed()] == [("p", 11.5)]
    assert tracker.completed() == []
