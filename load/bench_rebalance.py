"""`streamscore load rebalance`: how long a second worker joining, then leaving, stops scoring,
with the classic protocol (cooperative-sticky, the worker's default) against KIP-848's
``group.protocol=consumer``, rounds interleaved, on a private Apache Kafka stack.

One round of one protocol: worker A runs live on topics of its own; an open-loop generator sends
at a fixed rate for ``seconds``; worker B starts ``join_at`` seconds in and gets SIGTERM (a
clean leave) ``leave_at`` seconds in. A reader records when each output arrives and from which
partition. Per window (before the join, from B's start to its SIGTERM, from its SIGTERM to the
end): the longest time with no output at all, and the longest time any one partition went
without an output (a moved partition waits for its new owner).

With ``group.protocol=consumer`` the client must not set ``session.timeout.ms``,
``heartbeat.interval.ms`` or ``partition.assignment.strategy`` (the broker owns them:
``group.consumer.*``, Kafka 4.3's defaults here: heartbeat 5 s, session 45 s). The workers of
that arm start with those three removed from their consumer's configuration and
``group.protocol=consumer`` added, by a prelude run before the CLI; nothing else changes.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from load.bench import Env, _finish, _launch_peer, _wait_scoring, add_topics, launch_worker
from load.bench import _worker_settings as worker_settings
from load.bench_memory import launch_worker_after
from services.core.settings import Settings
from services.kafka.config import consumer_config

CONSUMER_PROTOCOL = """
import services.kafka.config as _kc
import streams.worker.membership as _membership
_classic = _kc.consumer_config
def _consumer_protocol(settings, group_id, **overrides):
    conf = _classic(settings, group_id, **overrides)
    for name in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
        conf.pop(name, None)
    return conf | {"group.protocol": "consumer"}
_membership.consumer_config = _consumer_protocol
"""
PROTOCOLS = {"classic (cooperative-sticky)": "", "consumer (KIP-848)": CONSUMER_PROTOCOL}


class PartitionReader:
    """Reads an output topic as it fills: (partition, read time) per output."""

    def __init__(self, env: Env, topic: str) -> None:
        self.env, self.topic = env, topic
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        c = Consumer(
            consumer_config(self.env.settings, f"bench-reb-{uuid.uuid4().hex[:6]}")
            | {"auto.offset.reset": "earliest", "fetch.wait.max.ms": 5}
        )
        c.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                got = c.consume(1000, 0) or c.consume(1, 0.05)
                now = time.time()
                self.samples += [(m.partition() or 0, now) for m in got if m.error() is None]
        finally:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _gaps(samples: list[tuple[int, float]], start: float, end: float) -> dict[str, float]:
    """Longest silence (s) of the whole stream, and of any one partition, in [start, end).

    >>> _gaps([(0, 1.0), (1, 1.5), (0, 3.0)], 0.0, 4.0)
    {'stream_gap_s': 1.5, 'partition_gap_s': 2.5}
    """
    inside = [(p, t) for p, t in samples if start <= t < end]
    times = sorted([start] + [t for _, t in inside] + [end])
    whole = max(b - a for a, b in zip(times, times[1:], strict=False))
    per: dict[int, list[float]] = {}
    for p, t in inside:
        per.setdefault(p, []).append(t)
    worst = 0.0
    for ts in per.values():
        ts = sorted([start, *ts, end])
        worst = max(worst, max(b - a for a, b in zip(ts, ts[1:], strict=False)))
    return {"stream_gap_s": round(whole, 3), "partition_gap_s": round(worst, 3)}


def _launch(settings: Settings, prelude: str) -> Any:
    return launch_worker_after(prelude, settings) if prelude else launch_worker(settings)


def one_round(
    env: Env, protocol: str, rate: float, seconds: float, join_at: float, leave_at: float
) -> dict[str, Any]:
    prelude = PROTOCOLS[protocol]
    env.counter += 1
    tag = f"{env.counter}-{'kip848' if prelude else 'classic'}"
    inp, out = f"bench.reb-in-{tag}.v1", f"bench.reb-out-{tag}.v1"
    add_topics(env.settings, {inp: "Interaction", out: "Prediction", f"{inp}.dlq": "DeadLetter"})
    s = worker_settings(env, inp, out, f"bench-reb-{tag}")
    a = _launch(s, prelude)
    reader = PartitionReader(env, out)
    b = None
    try:
        _wait_scoring(env, a, inp, reader.samples)
        env.counter += 1
        t0 = time.time()
        gen = _launch_peer(env, "openloop", {"input_topic": inp, "rate": rate, "seconds": seconds})
        time.sleep(max(0.0, t0 + join_at - time.time()))  # the schedule of the round
        joined = time.time()
        b = _launch(s, prelude)
        time.sleep(max(0.0, t0 + leave_at - time.time()))
        left = time.time()
        b.terminate()
        (b_report,) = _finish([b], timeout=120)
        (sent,) = _finish([gen], timeout=seconds + 120)
        deadline = time.monotonic() + 30
        while len(reader.samples) < sent["events"] + 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for the reader thread, with a deadline
        end = t0 + seconds
        return {
            "protocol": protocol,
            "sent": sent["events"],
            "answered": len(reader.samples) - 1,  # less the probe event of _wait_scoring
            "b_first_output_after_s": round(b_report["first_message_at"] - joined, 2)
            if b_report.get("first_message_at")
            else None,
            "b_consumed": b_report["consumed"],
            "before": _gaps(reader.samples, t0 + 3.0, joined),
            "join": _gaps(reader.samples, joined, left),
            "leave": _gaps(reader.samples, left, end),
        }
    finally:
        reader.close()
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.communicate(timeout=60)


def run(
    env: Env,
    rounds: int,
    rate: float,
    seconds: float,
    join_at: float,
    leave_at: float,
    tick: Callable[[str], None],
) -> dict[str, Any]:
    runs = []
    for rnd in range(rounds):
        for protocol in PROTOCOLS:
            tick(f"round {rnd + 1}/{rounds}: {protocol}")
            runs.append(one_round(env, protocol, rate, seconds, join_at, leave_at) | {"round": rnd})
    rows = {}
    for protocol in PROTOCOLS:
        mine = [r for r in runs if r["protocol"] == protocol]
        rows[protocol] = {
            f"{w}_{k}": statistics.median(r[w][k] for r in mine)
            for w in ("before", "join", "leave")
            for k in ("stream_gap_s", "partition_gap_s")
        }
    return {
        "rate": rate,
        "seconds": seconds,
        "join_at": join_at,
        "leave_at": leave_at,
        "rounds": rounds,
        "rows": rows,
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| protocol | longest silence s, whole stream: before / join / leave | longest silence "
        "s, one partition: before / join / leave |",
        "|---|---|---|",
    ]
    for protocol, row in result["rows"].items():
        lines.append(
            f"| {protocol} | {row['before_stream_gap_s']:.2f} / {row['join_stream_gap_s']:.2f} / "
            f"{row['leave_stream_gap_s']:.2f} | {row['before_partition_gap_s']:.2f} / "
            f"{row['join_partition_gap_s']:.2f} / {row['leave_partition_gap_s']:.2f} |"
        )
    lines += [
        "",
        "| round | protocol | sent | answered | B's first output after start s | B consumed | "
        "join: stream / partition s | leave: stream / partition s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['round'] + 1} | {r['protocol']} | {r['sent']:,} | {r['answered']:,} | "
            f"{r['b_first_output_after_s']} | {r['b_consumed']:,} | "
            f"{r['join']['stream_gap_s']:.2f} / {r['join']['partition_gap_s']:.2f} | "
            f"{r['leave']['stream_gap_s']:.2f} / {r['leave']['partition_gap_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"
