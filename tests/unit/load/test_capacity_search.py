"""The capacity search: brackets, looking lower, the table's labels, each one's upper bound."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import pytest

from load.capacity import Probe
from load.capacity_report import markdown
from load.capacity_search import Bracket, rows
from load.cli import load_line, upper_bounds


def search(b: Bracket, passes: Callable[[float], bool], steps: int) -> list[float]:
    """The rates probed with ``steps`` probes after the first, as bisect_capacity runs it."""
    probed = []
    for _ in range(steps + 1):
        rate = b.next_rate()
        if rate is None:
            break
        probed.append(rate)
        b.record(rate, passes(rate))
    return probed


def test_a_failing_lowest_rate_looks_lower_once_then_gives_up() -> None:
    b = Bracket(500, 10_000)
    assert search(b, lambda r: False, steps=5) == [500, 250]
    assert (b.passed, b.failed, b.label()) == (None, 250, "below 250")


def test_a_pass_below_the_lowest_rate_is_bisected_up_to_it() -> None:
    b = Bracket(500, 10_000)
    probed = search(b, lambda r: r <= 300, steps=3)
    assert probed[:3] == [500, 250, pytest.approx(math.sqrt(250 * 500))]
    assert b.passed is not None and b.failed is not None
    assert 250 <= b.passed <= 300 < b.failed < 500
    assert b.label() == f"{b.passed:,.0f}"


def test_the_bracket_holds_the_capacity() -> None:
    b = Bracket(500, 16_000)
    search(b, lambda r: r <= 3000, steps=6)
    assert b.passed is not None and b.failed is not None
    assert b.passed <= 3000 < b.failed
    assert b.failed / b.passed < 1.3


def test_a_search_that_never_fails_stops_below_its_upper_bound() -> None:
    b = Bracket(500, 4000)
    search(b, lambda r: True, steps=20)
    assert b.failed is None and b.passed is not None and 4000 / b.passed < 1.02
    assert b.next_rate() is None


def test_the_table_says_below_the_lowest_rate_and_never_0() -> None:
    brackets = {"bare": Bracket(500, 9000, 2000, 2500), "streamscore": Bracket(500, 8000)}
    brackets["streamscore"].record(500, passed=False)
    brackets["streamscore"].record(250, passed=False)
    got = rows(brackets)
    assert got["streamscore"]["capacity"] is None
    assert got["streamscore"]["ratio_to_bare"] is None
    assert got["streamscore"]["ratio_range"] == [0.0, 0.125]  # 0 to 250 / 2000
    table = markdown({"bound_ms": 50.0, "seconds": 20.0, "rows": got, "probes": []})
    assert "| streamscore | below 250 | - / 250 | 8,000 |" in table
    assert "| bare | 2,000 | 2,000 / 2,500 | 9,000 | 1.0 | 0.8 to 1.25 |" in table


def test_each_implementation_is_bounded_by_its_own_backlog_rate() -> None:
    measured = {
        "bare": {"events_per_second": 9000.0},
        "ceiling": {"events_per_second": 213_000.0},
        "streamscore": {"events_per_second": 10_000.0},
        "streamscore_nolog": {"events_per_second": 11_000.0},
    }
    got = upper_bounds(measured, ("bare", "streamscore", "streamscore_nolog", "streamscore_eos"))
    assert got == {
        "bare": 9000.0,
        "streamscore": 10_000.0,
        "streamscore_nolog": 11_000.0,
        "streamscore_eos": 11_000.0,  # not run in backlog mode: the fastest scoring one's
    }


def test_each_probe_row_shows_the_machine_s_load_and_the_broker_s_cpu() -> None:
    probe = Probe(
        "bare", 500, 500, 10_000, 10_000, 4.0, 8.0, 12.5, 0.9, 1.1, True, 0.3, 1.2, "pass", 0,
        {"broker": 1.5, "redis": 0.25}, [3.12, 2.5, 1.0],
    )  # fmt: skip
    table = markdown(
        {"bound_ms": 50.0, "seconds": 20.0, "rows": rows({}), "probes": [asdict(probe)]}
    )
    assert "| 12.5 | - | 0.9 | 0.3 / 1.2 | 1.1 | 1.75 | 3.12 | pass |" in table
    line = load_line({"load_average": {"start": [1.0, 2.0, 3.0], "end": [4.0, 5.0, 6.0]}})
    assert line.endswith("1.0, 2.0, 3.0 at the start, 4.0, 5.0, 6.0 at the end")
