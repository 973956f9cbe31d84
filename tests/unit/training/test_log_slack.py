"""The feature log's read range around the events' times (the slack, a setting), and the
lines that count events without a logged row: they name the slack as a cause, not only the
log's retention."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from services.core.errors import ConfigError
from services.core.settings import Settings
from services.features.spec import FeatureSpec
from services.training import log_reader
from streams.commands import rows as rows_module

EVENTS = [{"event_id": f"e{i}", "event_time": 1_000_000_000 + i * 1000} for i in range(4)]


def test_the_read_range_follows_the_slack_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int]] = []

    def messages(
        settings: Settings, topic: str, since: int, until: int, timeout: float
    ) -> Iterator[Any]:
        asked.append((since, until))
        return iter(())

    monkeypatch.setattr(log_reader, "_messages", messages)
    spec = FeatureSpec("v", ())
    for settings, slack in (
        (Settings(domain="delivery"), log_reader.LOG_SLACK_MS),
        (Settings(domain="delivery", features={"log_slack_seconds": 90}), 90_000),
    ):
        read = log_reader.read_training_rows(settings, spec, None, "t", EVENTS, {"e0"}, 1)  # type: ignore[arg-type]  # no record is decoded
        assert read.records == 0
        assert asked[-1] == (1_000_000_000 - slack, 1_000_003_000 + slack)


class _Logged:
    """The index of a read that found the rows of ``ids`` (all choose_rows asks of it)."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)


@pytest.mark.parametrize(("found", "said"), [({"e0", "e1"}, "2 labelled events"), (set(), "none")])
def test_the_left_out_line_names_events_scored_after_the_slack(
    monkeypatch: pytest.MonkeyPatch, found: set[str], said: str
) -> None:
    def read(*args: Any) -> log_reader.LogRead:
        return log_reader.LogRead("delivery.feature-log.v1", _Logged(found), 1)  # type: ignore[arg-type]  # a stand-in index

    monkeypatch.setattr(rows_module, "read_training_rows", read)
    monkeypatch.setattr(rows_module, "codec_for", lambda *a: None)
    settings = Settings(domain="delivery", features={"log_slack_seconds": 90})
    out = io.StringIO()
    labels = {e["event_id"]: 1.0 for e in EVENTS}
    causes = (
        "older than the log's retention, never scored, or scored more than 90 s after the newest "
        "event's time (STREAMSCORE_FEATURES__LOG_SLACK_SECONDS)"
    )
    console = Console(file=out, width=1000)
    if found:
        chosen = rows_module.choose_rows(
            settings, FeatureSpec("v", ()), list(EVENTS), labels, console
        )
        assert chosen.report["left_out"] == 2
        assert f"2 labelled events have no row in the feature log ({causes})" in out.getvalue()
    else:
        with pytest.raises(ConfigError) as refused:
            rows_module.choose_rows(settings, FeatureSpec("v", ()), list(EVENTS), labels, console)
        assert f"has a row in the feature log delivery.feature-log.v1 ({causes})" in str(
            refused.value
        )
