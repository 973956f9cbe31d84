"""The demo's act 2 ends with a drift report: the window after the onset against the champion at
the onset; without the extra, or when the report fails, one line and the act goes on."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from services.core.errors import NotFound
from services.core.settings import Settings
from services.drift.report import INSTALL
from streams.commands import demo_drift

ACT: dict[str, Any] = {"window_ms": [1_000, 2_000], "timeline": [], "quality": []}
SUMMARY = {
    "model_name": "m",
    "model_version": "2",
    "out": "/h/drift-report.html",
    "current_rows": 29_000,
    "drifted_columns": [],
    "columns": [{"column": c, "drifted": False} for c in ("a", "b", "c")],
    "prediction": {"drifted": False},
}


def _console() -> Console:
    return Console(width=200, record=True, color_system=None)


def test_the_report_reads_the_window_after_the_onset_against_the_champion_at_the_onset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[int, int, Path, str | None]] = []

    def report(s: Settings, from_ms: int, to_ms: int, out: Path, version: str | None) -> Any:
        calls.append((from_ms, to_ms, out, version))
        return SUMMARY

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(demo_drift, "drift_report", report)
    out = tmp_path / "drift-report.html"
    got = demo_drift.report_after_act(_console(), Settings(), ACT, "2", out)
    assert got == SUMMARY
    assert calls == [(1_000, 2_000, out, "2")]
    c = _console()
    demo_drift.render(c, ACT | {"events": 1, "onset_event": 0, "report": got})
    text = c.export_text()
    assert "drift report: /h/drift-report.html (29,000 events after the onset" in text
    assert "0 of 3 inputs drifted; served score stable (concept drift moves no input" in text


def test_without_the_extra_one_line_names_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "evidently" else object()
    )
    monkeypatch.setattr(demo_drift, "drift_report", lambda *a: pytest.fail("no extra, no read"))
    got = demo_drift.report_after_act(_console(), Settings(), ACT, "2", tmp_path / "r.html")
    assert got == {"note": f"no drift report: it needs Evidently ({INSTALL})"}
    c = _console()
    demo_drift.render(c, ACT | {"events": 1, "onset_event": 0, "report": got})
    assert f"no drift report: it needs Evidently ({INSTALL})\n" in c.export_text()


def test_a_failed_report_is_one_line_and_the_act_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def report(*_a: Any) -> Any:
        raise NotFound("no event stored in t between 1000 and 2000")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(demo_drift, "drift_report", report)
    got = demo_drift.report_after_act(_console(), Settings(), ACT, "2", tmp_path / "r.html")
    assert got == {"note": "no drift report: no event stored in t between 1000 and 2000"}
    no_window = demo_drift.report_after_act(
        _console(), Settings(), ACT | {"window_ms": None}, "2", tmp_path / "r.html"
    )
    assert no_window == {"note": "no drift report: no event after the onset was streamed"}
