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
    for r in ranges:  # a commit anywhere in (or before) its range, or none
        if data.draw(st.booleans()):
            done[r.partition] = data.draw(st.integers(r.start, r.end))
    rest = {r.partition: r for r in remaining(plan, done)}
    for r in ranges:
        handled = set(range(r.start, done.get(r.partition, r.start)))
        left = (
            set(range(rest[r.partition].start, rest[r.partition].end))
            if r.partition in rest
            else set()
        )
        assert handled | left == set(range(r.start, r.end))
        assert not handled & left


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
