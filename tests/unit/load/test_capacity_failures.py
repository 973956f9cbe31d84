"""A probe that raises is a failed row, the run goes on, and what was measured is written."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from load import capacity as cap
from load import capacity_report as cap_report
from load.cli import write_out


class FakeLive:
    """A live implementation whose latency is 10 ms up to ``capacity`` and 100 ms above;
    ``broken`` raises in its probe at or above that rate."""

    capacity = {"bare": 3000.0, "streamscore": 1000.0}
    broken: dict[str, float] = {}

    def __init__(self, env: Any, impl: str, changes: Any = None) -> None:
        self.env, self.impl = env, impl

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def probe(self, rate: float, seconds: float) -> cap.Probe:
        if rate >= self.broken.get(self.impl, float("inf")):
            raise RuntimeError(f"{self.impl} exited 1 during a probe: boom")
        p99 = 10.0 if rate <= self.capacity[self.impl] else 100.0
        why = cap.verdict(rate, 100, 100, rate, p99, 0.2)
        return cap.Probe(
            self.impl, round(rate), round(rate), 100, 100, 5.0, 8.0, p99, 0.1, 0.1,
            why == "pass", 0.2, 0.5, why, 0, {}, [1.0, 1.0, 1.0],
        )  # fmt: skip

    def close(self) -> None:
        pass


@pytest.fixture
def fake_live(monkeypatch: pytest.MonkeyPatch) -> type[FakeLive]:
    monkeypatch.setattr(cap, "Live", FakeLive)
    monkeypatch.setattr(FakeLive, "broken", {})
    return FakeLive


def test_a_probe_that_raises_is_a_failed_row_and_the_others_go_on(
    fake_live: type[FakeLive],
) -> None:
    fake_live.broken = {"streamscore": 1500.0}
    env = SimpleNamespace(notes=[])
    out: dict[str, Any] = {}
    highs = {"bare": 8000.0, "streamscore": 8000.0}
    cap.bisect_capacity(env, ("bare", "streamscore"), 500, highs, 5, 1.0, print, out=out)
    errors = [p for p in out["probes"] if p["verdict"] == "error"]
    assert [(p["impl"], p["rate"]) for p in errors] == [("streamscore", 2000)]
    assert "boom" in errors[0]["error"]
    assert out["rows"]["streamscore"]["capacity"] == 500  # its search ended at the error
    assert out["rows"]["bare"]["capacity"] is not None
    assert 2500 < out["rows"]["bare"]["capacity"] <= 3000  # bare's search went on
    assert any("streamscore: the probe at 2,000/s failed" in n for n in env.notes)
    assert "| streamscore | 2,000 | 0 | 0/0 |" in cap_report.markdown(out)


def test_tail_probes_keep_a_failed_row(fake_live: type[FakeLive]) -> None:
    fake_live.broken = {"streamscore": 0.0}
    rows: list[dict[str, Any]] = []
    cap.tail_probes(SimpleNamespace(notes=[]), 500, 1.0, print, rows)
    assert len(rows) == 2 * (1 + len(cap.SUSPECTS))
    assert [r["verdict"] for r in rows if r["suspect"] == cap.CONTROL] == ["pass", "pass"]
    assert {r["verdict"] for r in rows if r["suspect"] != cap.CONTROL} == {"error"}
    assert "| bare (control) | 500 |" in cap_report.tail_markdown(rows)


def test_a_partial_result_is_written(tmp_path: Path) -> None:
    said: list[str] = []
    result = {
        "machine": {},
        "error": "RuntimeError: boom",
        "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
    }
    write_out(tmp_path / "out", result, said.append)
    assert (
        json.loads((tmp_path / "out" / "bench.json").read_text())["error"] == "RuntimeError: boom"
    )
    assert said and all("not written" in s for s in said)  # no table from a run with no rows


def test_a_probe_with_the_generator_behind_is_probed_once_more(
    fake_live: type[FakeLive], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No evidence either way: the same rate again; the second probe's verdict counts."""
    behind_once = {"bare": {500.0}}

    def probe(self: FakeLive, rate: float, seconds: float) -> cap.Probe:
        first = rate in behind_once.get(self.impl, set())
        behind_once.get(self.impl, set()).discard(rate)
        lag = cap.GENERATOR_LAG_MS + 1 if first else 0.2
        p99 = 80.0 if first else (10.0 if rate <= self.capacity[self.impl] else 100.0)
        why = cap.verdict(rate, 100, 100, rate, p99, lag)
        return cap.Probe(
            self.impl, round(rate), round(rate), 100, 100, 5.0, 8.0, p99, 0.1, 0.1,
            why == "pass", lag, lag, why, 0, {}, [1.0, 1.0, 1.0],
        )  # fmt: skip

    monkeypatch.setattr(FakeLive, "probe", probe)
    out: dict[str, Any] = {}
    cap.bisect_capacity(SimpleNamespace(notes=[]), ("bare",), 500, {"bare": 8000.0}, 3, 1.0,
                        print, out=out)  # fmt: skip
    at_500 = [p["verdict"] for p in out["probes"] if p["rate"] == 500]
    assert at_500 == [cap.INCONCLUSIVE, "pass"]
    assert out["rows"]["bare"]["capacity"] is not None and out["rows"]["bare"]["capacity"] > 500
