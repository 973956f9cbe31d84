"""The replay's pure parts: plans, resumption, the diff (hand-computed), and validation against
per-event times (equal to validating each event alone at its own time)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from services.replay.diff import Scored, diff, markdown
from services.replay.plan import Range, ReplayPlan, remaining
from services.validation.rules import RecordRules, validate_many, validate_one

RULES = RecordRules.from_dict(
    {
        "record": "R",
        "fields": {"n": {"min": 0}},
        "time_window": {"field": "t", "max_age_days": 1, "max_future_seconds": 60},
    }
)


@given(
    st.lists(
        st.tuples(
            st.integers(-5, 5),
            st.integers(0, 3 * 86_400_000),
            st.integers(0, 3 * 86_400_000),
        ),
        max_size=40,
    )
)
def test_validating_against_per_event_times_equals_each_event_alone(
    rows: list[tuple[int, int, int]],
) -> None:
    records = [{"n": n, "t": t} for n, t, _ in rows]
    at = np.asarray([now for _, _, now in rows], dtype=np.int64)
    expected = [validate_one(r, RULES, now) for r, (_, _, now) in zip(records, rows, strict=True)]
    assert validate_many(records, RULES, at) == expected


def test_an_old_event_is_valid_at_the_time_it_was_stored_not_at_replay_time() -> None:
    day = 86_400_000
    event = {"n": 1, "t": 10 * day}
    assert validate_many([event], RULES, np.asarray([10 * day + 5])) == [None]
    [late] = validate_many([event], RULES, 13 * day)
    assert late is not None and late.reason.value == "time_out_of_window"


def commits(r: Range) -> st.SearchStrategy[int]:
    """A committed offset for range ``r``: none yet (librdkafka's -1001), below the range's
    start (the group read earlier offsets before), inside it, at its end, or past it (the
    group went on reading beyond the plan)."""
    return st.one_of(
        st.sampled_from([-1001, -1]),
        st.integers(0, r.start),
        st.integers(r.start, r.end),
        st.integers(r.end, r.end + 100),
    )


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=6),
    st.data(),
)
def test_resuming_never_skips_or_repeats_an_offset(
    spans: list[tuple[int, int]], data: st.DataObject
) -> None:
    ranges = tuple(Range(p, min(a, b), max(a, b)) for p, (a, b) in enumerate(spans))
    plan = ReplayPlan("r", "t", ranges, "out")
    done: dict[int, int] = {}
    for r in ranges:  # a commit before, in or past its range, or none
        if data.draw(st.booleans()):
            done[r.partition] = data.draw(commits(r))
    if data.draw(st.booleans()):  # a commit of a partition the plan does not read
        done[len(ranges)] = data.draw(st.integers(-1001, 100))
    rest = remaining(plan, done)
    assert len({r.partition for r in rest}) == len(rest)  # one range per partition at most
    by_partition = {r.partition: r for r in rest}
    assert set(by_partition) <= {r.partition for r in ranges}
    for r in ranges:
        at = done.get(r.partition, -1)
        # Handled: the range's offsets below a real commit (a negative one is no commit).
        handled = {o for o in range(r.start, r.end) if 0 <= at and o < at}
        left = by_partition.get(r.partition)
        if left is not None:
            assert r.start <= left.start < left.end == r.end
        offsets = set(range(left.start, left.end)) if left is not None else set()
        assert handled | offsets == set(range(r.start, r.end))
        assert not handled & offsets


def test_a_plan_survives_its_file() -> None:
    plan = ReplayPlan("r", "t", (Range(0, 1, 5),), "out", "3", "out.dlq", (10, None))
    assert ReplayPlan.from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["ranges"] == [{"partition": 0, "start": 1, "end": 5}]


def test_diff_by_hand() -> None:
    base = {
        "a": Scored(0.40, "1"),
        "b": Scored(0.70, "1"),
        "c": Scored(0.20, "2"),
        "d": Scored(0.90, "2"),
        "only-base": Scored(0.5, "1"),
    }
    other = {
        "a": Scored(0.55, "3"),  # +0.15, flips up
        "b": Scored(0.70, "3"),  # unchanged
        "c": Scored(0.10, "3"),  # -0.10
        "d": Scored(0.45, "3"),  # -0.45, flips down
        "only-other": Scored(0.1, "3"),
    }
    d = diff(base, other, threshold=0.5, worst=2)
    assert (d.matched, d.only_in_base, d.only_in_other) == (4, 1, 1)
    assert (d.changed, d.flips_up, d.flips_down) == (3, 1, 1)
    assert round(d.delta["mean"], 10) == round((0.15 + 0 - 0.10 - 0.45) / 4, 10)
    assert round(d.delta["abs_max"], 10) == 0.45
    assert [w["event_id"] for w in d.worst] == ["d", "a"]
    assert sum(d.histogram["counts"]) == 4
    rows = {(v["base_version"], v["other_version"]): v for v in d.by_version}
    assert rows[("1", "3")]["events"] == 2 and rows[("1", "3")]["changed"] == 1
    assert rows[("2", "3")]["flips"] == 1
    text = markdown(d)
    assert "- changed: 3 (75.0%)" in text and "| d |" in text


def test_identical_runs_diff_to_nothing() -> None:
    same = {str(i): Scored(i / 10, "1") for i in range(10)}
    d = diff(same, dict(same))
    assert (d.changed, d.flips_up, d.flips_down, d.worst) == (0, 0, 0, [])
