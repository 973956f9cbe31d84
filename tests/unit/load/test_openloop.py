"""The open-loop generator's schedule and the capacity probe's verdict (pure parts)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from load.bench_peers import (
    _zigzag_long,
    due_count,
    producer_settings,
    run_openloop,
    schedule_lags,
)
from load.capacity import GENERATOR_LAG_MS, marker_values, verdict


def simulate(rate: float, seconds: float, wakeups: list[float]) -> list[tuple[float, int, int]]:
    """The generator's sends had it woken at ``wakeups`` (from start) and sent what was due."""
    total, sent, sends = round(rate * seconds), 0, []
    for t in wakeups:
        due = min(total, due_count(0.0, rate, t))
        if due > sent:
            sends.append((t, sent, due))
            sent = due
    return sends


def test_a_generator_on_a_1_ms_tick_is_on_schedule() -> None:
    sends = simulate(20_000, 2.0, [i / 1000 for i in range(2001)])
    lags = schedule_lags(0.0, 20_000, sends)
    assert lags.size == 40_000
    assert np.percentile(lags, 99) * 1000 <= 1.0
    assert lags.min() >= 0.0


def test_a_stalled_generator_shows_its_lag() -> None:
    # Wakes every millisecond, but nothing for 50 ms in the middle: the events due in the
    # stall go out late, and are stamped with their due times (so the reader sees it too).
    ticks = [i / 1000 for i in range(2001) if not 1000 < i < 1050]
    lags = schedule_lags(0.0, 1000, simulate(1000, 2.0, ticks))
    assert lags.max() * 1000 == pytest.approx(49.0, abs=0.01)
    assert np.percentile(lags, 99) * 1000 > GENERATOR_LAG_MS


def test_due_count_starts_with_the_first_event_at_start() -> None:
    assert due_count(5.0, 100.0, 4.999) == 0
    assert due_count(5.0, 100.0, 5.0) == 1
    assert due_count(5.0, 100.0, 5.0101) == 2


def test_the_due_time_stamp_fits_the_six_bytes_it_replaces() -> None:
    # The pre-encoded body's event_time is patched in place: a 6-byte zigzag varint.
    now_ms = int(time.time() * 1000)
    assert len(_zigzag_long(now_ms)) == 6
    assert len(_zigzag_long(now_ms + 86_400_000 * 365)) == 6


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1000, 100, 100, 1000.0, 20.0, 0.5), "pass"),
        # Latency counts from the due time: a late generator's lag is inside the 20 ms.
        ((1000, 100, 100, 1000.0, 20.0, GENERATOR_LAG_MS + 0.1), "pass"),
        ((1000, 100, 100, 1000.0, 80.0, GENERATOR_LAG_MS + 0.1), "generator behind"),
        ((1000, 100, 99, 1000.0, 20.0, 0.5), "unanswered"),
        ((1000, 100, 100, 900.0, 20.0, 0.5), "rate not kept"),
        ((1000, 100, 100, 1000.0, None, 0.5), "no samples"),
        ((1000, 100, 100, 1000.0, 50.1, 0.5), "over bound"),
    ],
)
def test_verdict(args: tuple[float, int, int, float, float | None, float], expected: str) -> None:
    assert verdict(*args) == expected


@pytest.mark.parametrize(
    ("cfg", "linger"),
    [
        ({"live": True}, 1),  # bare in --capacity: as the worker's producer
        ({"rate": 500.0}, 1),  # the open-loop source
        ({"events": 1000}, 5),  # backlog runs
    ],
)
def test_what_runs_live_lingers_as_the_worker_does(cfg: dict[str, object], linger: int) -> None:
    assert producer_settings({"bootstrap": "b:9092"} | cfg)["linger.ms"] == linger


def _read_long(buf: bytes) -> int:
    z = shift = 0
    for byte in buf:
        z |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return (z >> 1) ^ -(z & 1)


def test_resume_markers_differ_only_in_their_time_one_per_partition() -> None:
    now_ms = int(time.time() * 1000)
    body = b"\x00\x00\x00\x00\x07\x06abc" + _zigzag_long(now_ms - 600_000) + b"rest"
    values = marker_values(body, 9, now_ms, 6)
    assert sorted(values) == list(range(6))
    for p, value in values.items():
        assert len(value) == len(body)
        assert value[:9] == body[:9] and value[15:] == body[15:]
        assert _read_long(value[9:15]) == now_ms + p


class FakeProducer:
    """Takes what the generator sends (no broker: the pacing and the stamps are under test)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: object = None) -> None:
        self.values.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_the_generator_stamps_each_event_with_its_due_time_and_reports_its_lag() -> None:
    now_ms = int(time.time() * 1000)
    body = b"\x00\x00\x00\x00\x07\x06abc" + _zigzag_long(now_ms) + b"rest"
    reports: list[dict[str, object]] = []
    peer = SimpleNamespace(
        cfg={
            "bodies": [("6b", body.hex(), 9)],
            "rate": 2000.0,
            "seconds": 0.25,
            "input_topic": "t",
        },
        producer=FakeProducer(),
        delivered=None,
        report=lambda sent, start, cpu0, **extra: reports.append(
            {"sent": sent, "start": start} | extra
        ),
    )
    run_openloop(peer)
    (report,) = reports
    assert report["sent"] == 500
    start = float(report["start"])
    stamps = [_read_long(v[9:15]) for v in peer.producer.values]
    assert stamps == [int((start + i / 2000.0) * 1000) for i in range(500)]
    assert 0.0 <= float(report["lag_p99_ms"]) <= float(report["lag_max_ms"])
    assert float(report["elapsed_seconds"]) >= 0.25
