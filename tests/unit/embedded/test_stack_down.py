"""`down` acts per component: the demo stops what it started (Prometheus, say) and leaves the
broker and Redis that `local up` started before it running."""

from __future__ import annotations

import sys
from pathlib import Path

from services.core.settings import Settings
from services.embedded.process import ProcessRecord, is_running, spawn, start_ticks
from services.embedded.stack import BROKER, PROMETHEUS, REDIS, EmbeddedStack


def _sleeper(name: str, state_dir: Path) -> ProcessRecord:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    proc = spawn(argv, state_dir / f"{name}.log", state_dir)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    record = ProcessRecord(name, name, proc.pid, tuple(argv), "127.0.0.1:1", "/dev/null", 0, ticks)
    record.save(state_dir)
    return record


def test_down_stops_only_the_components_named(tmp_path: Path) -> None:
    stack = EmbeddedStack(Settings(home=tmp_path))
    records = {name: _sleeper(name, stack.state_dir) for name in (BROKER, REDIS, PROMETHEUS)}
    try:
        stopped = stack.down(only=(PROMETHEUS,))
        assert [r.name for r in stopped] == [PROMETHEUS]
        assert is_running(records[BROKER]) and is_running(records[REDIS])
        assert not is_running(records[PROMETHEUS])
    finally:
        assert {r.name for r in stack.down()} == {BROKER, REDIS}
