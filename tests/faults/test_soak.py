"""The soak: a worker process at half the rate this machine measured in the same run, for
`--soak-seconds` (600 in `make soak`). Opt-in: skipped unless asked for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.runtime import scoring_worker
from tests.faults.harness import (
    WorkerProcess,
    account,
    good_items,
    outputs_count,
    record,
    renamed,
    send,
    wait_for,
)
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]
MAX_RSS_GROWTH = 0.15  # after the first quarter (caches, compiled model, buffers warmed)
MAX_CATCH_UP_SECONDS = 30.0


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_soak_at_half_the_measured_rate(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seconds = float(request.config.getoption("--soak-seconds"))
    if seconds <= 0:
        pytest.skip("the soak runs with --soak-seconds (make soak)")
    # The rate this machine sustains now: a backlog through a worker in this process.
    probe = next(make_pipeline(stack, tmp_path / "probe"))
    send(probe, good_items(probe, 20_000, start=0))
    measured = scoring_worker(probe.settings).run(max_events=20_000, idle_timeout=30)
    assert measured.first_message_at is not None and measured.last_acked_at is not None
    busy = measured.last_acked_at - measured.first_message_at  # the group join not included
    rate = measured.consumed / max(busy, 1e-9) / 2
    p = next(make_pipeline(stack, tmp_path / "soak"))
    worker = WorkerProcess(p, tmp_path, "soak")
    worker.wait_assigned()
    started = time.monotonic()
    n = int(rate * seconds)
    # A pool of encoded events sent again and again under new ids: generating events at this
    # rate would compete with the worker for the machine's cores.
    pool = good_items(p, 50_000, start=0)
    rss: list[int] = []
    sent = []
    chunk = int(rate * 10)  # ten seconds of events per send; RSS sampled between them
    for first in range(0, n, chunk):
        items = [renamed(pool[k % len(pool)], k) for k in range(first, min(first + chunk, n))]
        sent += send(p, items, rate=rate)
        rss.append(_rss(worker.proc.pid))
    last_sent = time.monotonic()
    wait_for(lambda: outputs_count(p) >= n, 300, "the soak's last outputs")
    lag_seconds = time.monotonic() - last_sent
    assert worker.stop() == 0
    tally = account(p, sent)
    growth = (rss[-1] - rss[len(rss) // 4]) / rss[len(rss) // 4]
    assert tally.lost == 0 and tally.predicted == n
    # Bounded memory after warm-up, and a lag that never grew: the worker kept up at half its
    # rate, so the last outputs follow the last event within seconds, not minutes.
    assert growth < MAX_RSS_GROWTH, f"RSS grew {growth:+.1%} after warm-up: {rss}"
    assert lag_seconds < MAX_CATCH_UP_SECONDS, f"caught up {lag_seconds:.1f} s after the end"
    record(
        f"soak: {seconds / 60:g} min at {rate:,.0f} events/s (half the rate measured in the run)",
        "no loss, no growing lag, bounded memory",
        f"RSS {rss[len(rss) // 4] / 2**20:.0f} -> {rss[-1] / 2**20:.0f} MB ({growth:+.1%}) after "
        f"warm-up; caught up {lag_seconds:.1f} s after the last event",
        tally,
        time.monotonic() - started,
    )
