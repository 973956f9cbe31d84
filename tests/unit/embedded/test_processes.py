"""Process bookkeeping: we find our own processes again and never signal a stranger."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from services.embedded.process import (
    ProcessRecord,
    is_running,
    spawn,
    start_ticks,
    stop,
    stop_all,
)


def _record(pid: int, ticks: int, argv: tuple[str, ...] = ("x",)) -> ProcessRecord:
    return ProcessRecord("broker", "tansu", pid, argv, "127.0.0.1:1", "/dev/null", 0.0, ticks)


def test_spawned_process_is_found_then_stopped(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    proc = spawn(argv, tmp_path / "p.log", tmp_path)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    record = _record(proc.pid, ticks, tuple(argv))
    record.save(tmp_path)
    assert ProcessRecord.load(tmp_path, "broker") == record
    assert is_running(record) is True
    assert stop(record, timeout=5) is True
    assert is_running(record) is False
    assert proc.poll() is not None
    assert stop(record) is False  # already gone: nothing to do


def test_a_reused_pid_is_not_ours() -> None:
    # Our own pid is alive, but with a different start time it must not count as the record's.
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    assert is_running(_record(os.getpid(), ticks + 1)) is False
    assert stop(_record(os.getpid(), ticks + 1)) is False  # and is never signalled


def test_dead_pid_is_not_running() -> None:
    assert is_running(_record(2**22 + 7, 1)) is False


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    argv = [sys.executable, "-c", code]
    log = tmp_path / "p.log"
    proc = spawn(argv, log, tmp_path)
    deadline = time.monotonic() + 30  # wait until the child's SIGTERM handler is installed
    while "ignoring SIGTERM" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    assert stop(_record(proc.pid, ticks, tuple(argv)), timeout=0.5) is True
    assert proc.poll() is not None


def test_unreadable_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "broker.json").write_text('{"name": "broker"}')
    assert ProcessRecord.load(tmp_path, "broker") is None


# A node that, once told to stop, waits until all three were told (as KRaft nodes wait for
# their quorum), then exits by itself and says so.
_QUORUM_NODE = """
import pathlib, signal, sys, time
here = pathlib.Path(sys.argv[1]); me = sys.argv[2]
def term(*_):
    (here / f"term-{me}").touch()
    while len(list(here.glob("term-*"))) < 3:
        time.sleep(0.01)
    (here / f"exit-{me}").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(here / f"up-{me}").touch()
time.sleep(120)
"""


def test_nodes_that_wait_for_each_other_are_stopped_together(tmp_path: Path) -> None:
    records = []
    for n in "abc":
        argv = [sys.executable, "-c", _QUORUM_NODE, str(tmp_path), n]
        proc = spawn(argv, tmp_path / f"{n}.log", tmp_path)
        ticks = start_ticks(proc.pid)
        assert ticks is not None
        records.append(_record(proc.pid, ticks, tuple(argv)))
    deadline = time.monotonic() + 30  # until each node's SIGTERM handler is installed
    while len(list(tmp_path.glob("up-*"))) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # One after another, the first would wait for the others' SIGTERM until it was killed.
    assert stop_all(records, timeout=30) == records
    assert sorted(p.name for p in tmp_path.glob("exit-*")) == ["exit-a", "exit-b", "exit-c"]
    assert not any(is_running(r) for r in records)
    assert stop_all(records) == []  # already gone
