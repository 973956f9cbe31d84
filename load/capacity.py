"""`load bench --capacity`: the highest arrival rate each implementation answers within a latency
bound (p99 ≤ 50 ms by default), found by bisection over rates, open loop, in one run.

Every implementation runs live on input and output topics of its own and gets the same load
generator (``openloop`` in ``load/bench_peers.py``: pre-encoded events, each stamped with the
time it was due, start + i / rate) and the same reader (a consumer thread here: latency is read
time minus due time, so a late send counts against the probe and cannot hide a stall).
Steps are interleaved (bare, streamscore, bare, streamscore, ...), so a machine that drifts
during the run drifts for both; only the implementation under test runs (the others and their
readers are stopped between their probes: on 2 cores their idle fetches and timers are load).
One is stopped only once its commits reach its input's end (nothing left to score again in its
next probe), and resumed once it has answered an event sent after the resume on every input
partition; its consumer session outlasts the pause. Each search keeps its bracket (last pass,
first fail; ``load/capacity_search.py``), and a probe that raises is a failed row with its error.
A rate passes when every event sent was answered, the generator kept its rate, and the p99 of
the window after warm-up is within the bound. Latency counts from each event's due time, so a
generator that sent late only adds its lag to the implementation's figures: a pass stands
whatever the generator's lag. A probe over the bound while the generator fell behind its
schedule (p99 of its own lag over ``GENERATOR_LAG_MS``) is "generator behind": no evidence
either way. The same rate is then probed once more, and a second such probe counts as a fail
(both rows are in the result).

The generator's CPU and the harness process's whole CPU (the reader, its librdkafka threads,
the main thread) are reported with each probe: on a 2-core machine they share the cores with
the implementation under test. So is the implementation's own CPU while events were being
sent (sampled every 0.1 s; not the generator's start-up nor the drain after it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from confluent_kafka import Producer

from load.bench import (
    PARTITIONS,
    Env,
    Say,
    _finish,
    _lag_when_settled,
    _launch_peer,
    add_topics,
    cpu_seconds,
    launch_worker,
)
from load.bench import _worker_settings as worker_settings
from load.bench_peers import _zigzag_long
from load.capacity_reader import Reader
from load.capacity_search import Bracket
from load.capacity_search import rows as search_rows
from services.kafka.config import producer_config

CAPACITY_IMPLS = ("bare", "streamscore")
# The worker's variants that also run live: each is the worker with these settings changed.
LIVE_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "streamscore": {},
    "streamscore_eos": {"worker": {"processing_guarantee": "exactly_once"}},
    "streamscore_nolog": {"features": {"log": False}},
}
BOUND_MS = 50.0
INCONCLUSIVE = "generator behind"  # probed once more; a second one counts as a fail
WARMUP_SECONDS = 3.0
# How far behind its schedule the generator may send (p99) before a probe says more about the
# generator than about the implementation: its 1 ms pacing tick plus a scheduling hiccup.
GENERATOR_LAG_MS = 5.0
DRAIN_SECONDS = 30.0
SETTLE_SECONDS = 30.0  # for an implementation's commits to reach its input's end after a probe
# The live implementations' consumer session timeout: above the longest pause (SIGSTOP) of one
# of them, which lasts while the others are probed (each about ``seconds`` plus its drain, its
# settling and its resume: one to two minutes with four implementations), so that a pause never
# costs one its group membership. A stopped process sends no heartbeats: with the default 6 s
# every pause expired the session, and the rejoin landed inside its next probe. It stays below
# librdkafka's max.poll.interval.ms (300 s), which counts the pause too; a longer pause is
# noted in the result.
PAUSED_SESSION_MS = 240_000


@dataclass
class Probe:
    """One rate offered to one implementation for ``seconds``."""

    impl: str
    rate: int
    achieved_rate: int  # what the generator managed to send
    sent: int
    answered: int  # distinct events answered (a duplicate output does not count)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    generator_cpu_s: float
    harness_cpu_s: float  # this process: the reader, its librdkafka threads, the main thread
    passed: bool
    generator_lag_p99_ms: float  # how far behind its schedule the generator sent
    generator_lag_max_ms: float
    verdict: str  # "pass", or why not (see ``verdict``)
    duplicates: int  # outputs of an event already answered
    infra_cpu_s: dict[str, float]  # the broker's and Redis's CPU seconds over the probe
    load_average: list[float]  # os.getloadavg() at the probe's end (1, 5, 15 min)
    error: str | None = None  # the probe raised: no figures, verdict "error"
    impl_cpu_s: float = 0.0  # the implementation's process (all its threads) while events were sent


def failed_probe(impl: str, rate: float, exc: BaseException) -> Probe:
    """The row of a probe that raised: a failed probe, with the error, in the result."""
    return Probe(
        impl, round(rate), 0, 0, 0, None, None, None, 0.0, 0.0, False, 0.0, 0.0, "error", 0,
        {}, load_average(), f"{type(exc).__name__}: {exc}"[:2000],
    )  # fmt: skip


def verdict(
    rate: float,
    sent: int,
    answered: int,
    achieved: float,
    p99_ms: float | None,
    lag_p99_ms: float,
    bound_ms: float = BOUND_MS,
) -> str:
    """Whether a probe passed, and if not, the first reason.

    >>> verdict(1000, 20000, 20000, 999, 12.0, 0.4)
    'pass'
    >>> verdict(1000, 20000, 20000, 999, 12.0, 9.0)  # its lag is inside the 12 ms
    'pass'
    >>> verdict(1000, 20000, 20000, 999, 80.0, 9.0)
    'generator behind'
    >>> verdict(1000, 20000, 19999, 999, 12.0, 0.4)
    'unanswered'
    >>> verdict(1000, 20000, 19999, 999, 80.0, 9.0)  # a lost event is never "no evidence"
    'unanswered'
    """
    if answered < sent:
        return "unanswered"
    if lag_p99_ms > GENERATOR_LAG_MS and (p99_ms is None or p99_ms > bound_ms):
        return INCONCLUSIVE
    if achieved < 0.95 * rate:
        return "rate not kept"
    if p99_ms is None:
        return "no samples"
    if p99_ms > bound_ms:
        return "over bound"
    return "pass"


# The suspects of the worker's latency tail, each turned off alone (a probe per suspect).
SUSPECTS: dict[str, dict[str, dict[str, Any]]] = {
    "every feature on": {},
    "drift monitors and prediction store off": {"drift": {"enabled": False}},
    "metrics off": {"metrics": {"enabled": False}},
    "rate limits off": {"rate_limit": {"enabled": False}},
    "registry watch off": {"model": {"watch": False}},
    "commits every 10 s": {"batch": {"commit_interval_seconds": 10.0}},
    "feature log off": {"features": {"log": False}},
    "best-effort outputs not lingered (1 ms)": {"kafka": {"side_linger_ms": 1}},
}


class CpuSampler:
    """A process's CPU seconds, sampled every ``every`` seconds on a thread of its own, so the
    CPU of any window inside the sampling can be read afterwards (``between``)."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = [(time.time(), cpu_seconds(pid))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((time.time(), cpu_seconds(self.pid)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.samples.append((time.time(), cpu_seconds(self.pid)))

    def between(self, start: float, end: float) -> float:
        """CPU seconds used from ``start`` to ``end`` (wall-clock times), interpolated."""
        return cpu_between(self.samples, start, end)


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds from ``start`` to ``end``, from (time, cumulative CPU) samples,
    interpolated linearly between the samples around each end.

    >>> cpu_between([(0.0, 0.0), (1.0, 0.5), (2.0, 1.5)], 0.5, 2.0)
    1.25
    """
    times = np.asarray([t for t, _ in samples])
    cpus = np.asarray([c for _, c in samples])
    return round(float(np.interp(end, times, cpus) - np.interp(start, times, cpus)), 3)


def load_average() -> list[float]:
    """os.getloadavg(), rounded: how busy the machine was (2 cores: above 2 is a queue)."""
    return [round(x, 2) for x in os.getloadavg()]


def marker_values(body: bytes, at: int, base_ms: int, partitions: int) -> dict[int, bytes]:
    """Per partition, ``body`` with its event time (the 6 bytes at ``at``) set to base + p."""
    return {p: body[:at] + _zigzag_long(base_ms + p) + body[at + 6 :] for p in range(partitions)}


class Live:
    """One implementation running live on topics of its own until closed; ``changes`` are
    settings sections updated for the worker (a suspect turned off)."""

    def __init__(
        self, env: Env, impl: str, changes: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.env, self.impl = env, impl
        env.counter += 1
        tag = f"{env.counter}-{impl.replace('_', '-')}"
        self.inp, self.out = f"bench.cap-in-{tag}.v1", f"bench.cap-out-{tag}.v1"
        add_topics(
            env.settings,
            {self.inp: "Interaction", self.out: "Prediction", f"{self.inp}.dlq": "DeadLetter"},
        )
        self.group = group = f"bench-cap-{tag}"
        # Its output goes to a file: pipes nobody reads during a run would block it once full.
        self.log = env.workdir / f"live-{tag}.log"
        if impl in LIVE_VARIANTS:
            settings = worker_settings(env, self.inp, self.out, group)
            kafka = settings.kafka.model_copy(update={"session_timeout_ms": PAUSED_SESSION_MS})
            settings = settings.model_copy(update={"kafka": kafka})
            for section, values in (LIVE_VARIANTS[impl] | (changes or {})).items():
                part = getattr(settings, section).model_copy(update=values)
                settings = settings.model_copy(update={section: part})
            self.proc = launch_worker(settings, log=self.log)
        elif impl == "bare":
            self.proc = _launch_peer(
                env,
                "bare",
                {
                    "live": True,
                    "input_topic": self.inp,
                    "output_topic": self.out,
                    "group": group,
                    "session_timeout_ms": PAUSED_SESSION_MS,
                },
                log=self.log,
            )
        else:
            raise ValueError(f"no live mode for {impl!r}")
        self.stopped, self.paused_at = False, 0.0
        try:
            self.reader = Reader(env, self.out)
        except BaseException:
            self.proc.kill()
            self.proc.wait(30)
            raise
        try:
            self._answer_markers(120, "at its start")
        except BaseException:
            self.close()
            raise

    def pause(self) -> None:
        """Once all it scored is committed (else the rest would be scored again, inside its
        next probe), stop it (SIGSTOP) and its reader's fetching while another one is probed:
        on 2 cores an idle consumer's fetches and timers are load."""
        lag = _lag_when_settled(self.env, self.inp, self.group, SETTLE_SECONDS)
        if lag:
            self.env.notes.append(
                f"{self.impl}: {lag} events uncommitted {SETTLE_SECONDS:g} s after a probe"
            )
        self.reader.pause(True)
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped, self.paused_at = True, time.monotonic()

    def resume(self, timeout: float = 120) -> None:
        """Continue it and wait until it has answered an event sent after the resume on every
        partition: an output of leftover backlog does not count, and every partition is read."""
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False
        paused = time.monotonic() - self.paused_at
        if paused * 1000 >= PAUSED_SESSION_MS:
            self.env.notes.append(
                f"{self.impl}: paused {paused:.0f} s, beyond its session timeout "
                f"({PAUSED_SESSION_MS / 1000:g} s): it rejoined its group"
            )
        self.reader.pause(False)
        self._answer_markers(timeout, "after a pause")

    def _answer_markers(self, timeout: float, when: str) -> None:
        """One event on each input partition, stamped now (unique: no probe event or leftover
        has these times), and wait until the reader has the answer to every one."""
        t0 = time.time()
        self.reader.start(t0)  # only events stamped from now on count
        key, body, at = self.env.peer["bodies"][0]
        values = marker_values(bytes.fromhex(body), at, int(t0 * 1000), PARTITIONS)
        producer = Producer(producer_config(self.env.settings))
        for partition, value in values.items():
            producer.produce(self.inp, value, bytes.fromhex(key), partition=partition)
        producer.flush(30)
        want = {int(t0 * 1000) + p for p in values}
        deadline = time.monotonic() + timeout
        while not self.reader.wait(lambda t: want <= {et for et, _ in t.samples}, 1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.impl} exited {self.proc.returncode} {when}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.impl} did not answer an event on every partition {timeout:.0f} s {when}"
                )

    def probe(self, rate: float, seconds: float) -> Probe:
        self.env.counter += 1
        t0 = time.time()
        self.reader.start(t0)  # the events of this probe: due from now on
        cpu0 = time.process_time()
        infra0 = {name: cpu_seconds(pid) for name, pid in self.env.infra_pids.items()}
        sampler = CpuSampler(self.proc.pid)  # the implementation's CPU, for its send window
        sender = _launch_peer(
            self.env, "openloop", {"input_topic": self.inp, "rate": rate, "seconds": seconds}
        )
        try:
            (sent,) = _finish([sender], timeout=seconds + 120)
        finally:
            sampler.stop()
            if sender.poll() is None:  # it timed out: no generator outlives its probe
                sender.kill()
                sender.wait(30)
        n = int(sent["events"])
        deadline = time.monotonic() + DRAIN_SECONDS
        while not self.reader.wait(lambda t: t.answered >= n, 1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.impl} exited {self.proc.returncode} during a probe: {self.tail()}"
                )
            if time.monotonic() > deadline:
                break
        cpu = time.process_time() - cpu0
        infra = {
            name: round(cpu_seconds(pid) - infra0[name], 2)
            for name, pid in self.env.infra_pids.items()
        }
        answered, duplicates = self.reader.tally.answered, self.reader.tally.duplicates
        began = float(sent["first_message_at"])  # the generator's start: event 0 is due then
        # Over the sending only: not the generator's start-up nor the drain after it, whose
        # idle CPU divided by the events would fall with rate whatever the per-batch cost.
        impl_cpu = sampler.between(began, began + float(sent["elapsed_seconds"]))
        lat = np.asarray(
            [
                (read - et / 1000.0) * 1000.0
                for et, read in self.reader.samples
                if began + WARMUP_SECONDS <= et / 1000.0 <= began + seconds
            ]
        )

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 2) if lat.size else None

        p99 = pct(99)
        # Over the time the generator took (more than ``seconds`` when it fell behind).
        achieved = n / max(float(sent["elapsed_seconds"]), 1e-9)
        lag99, lagmax = float(sent["lag_p99_ms"]), float(sent["lag_max_ms"])
        why = verdict(rate, n, answered, achieved, p99, lag99)
        return Probe(
            self.impl,
            round(rate),
            round(achieved),
            n,
            answered,
            pct(50),
            pct(95),
            p99,
            round(float(sent["busy_cpu_seconds"]), 2),
            round(cpu, 2),
            why == "pass",
            round(lag99, 2),
            round(lagmax, 2),
            why,
            duplicates,
            infra,
            load_average(),
            impl_cpu_s=impl_cpu,
        )

    def tail(self) -> str:
        """The end of its output (stdout and stderr)."""
        try:
            return self.log.read_bytes()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.reader.close()
        if self.stopped:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=60)
        except Exception:  # noqa: BLE001 (a worker that will not stop is killed)
            self.proc.kill()
            self.proc.communicate(timeout=30)


def bisect_capacity(
    env: Env,
    impls: tuple[str, ...],
    low: float,
    highs: dict[str, float],
    steps: int,
    seconds: float,
    tick: Say,
    out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per implementation, the highest rate between ``low`` and its own upper bound
    (``highs``: its backlog rate) that passes, by geometric bisection (``Bracket``: at most
    ``steps`` probes after the one at ``low``; one of them at half of ``low`` when ``low``
    fails), the implementations' probes interleaved. Reports each one's bracket, into ``out``
    after every probe (so a run that fails later keeps what was measured). A probe that raises
    is a failed row with its error, and ends that implementation's search, not the run."""
    out = {} if out is None else out
    brackets = {impl: Bracket(low, max(highs[impl], low * 2)) for impl in impls}
    probes: list[Probe] = []

    def report() -> None:
        out.update(
            bound_ms=BOUND_MS,
            seconds=seconds,
            rows=search_rows(brackets),
            probes=[asdict(p) for p in probes],
            notes=list(env.notes),
        )

    lives: dict[str, Live] = {}
    try:
        for impl in impls:  # only the implementation under test runs; the others are stopped
            try:
                lives[impl] = Live(env, impl)
                lives[impl].pause()
            except Exception as exc:  # noqa: BLE001 (a row of the result, not the end)
                probes.append(failed_probe(impl, 0, exc))
                env.notes.append(f"{impl}: did not start: {exc}")
                _close(lives.pop(impl, None))
        report()
        for step in range(steps + 1):
            for impl, live in list(lives.items()):
                rate = brackets[impl].next_rate()
                if rate is None:
                    continue  # its search is over
                tick(f"capacity: {impl} at {rate:,.0f} events/s ({step}/{steps})")
                try:
                    live.resume()
                    probe = live.probe(rate, seconds)
                    if probe.verdict == INCONCLUSIVE:  # no evidence: the same rate once more
                        probes.append(probe)
                        tick(f"capacity: {impl} at {rate:,.0f} events/s again ({INCONCLUSIVE})")
                        probe = live.probe(rate, seconds)
                    live.pause()
                except Exception as exc:  # noqa: BLE001 (a row of the result, not the end)
                    probes.append(failed_probe(impl, rate, exc))
                    env.notes.append(f"{impl}: the probe at {rate:,.0f}/s failed: {exc}")
                    _close(lives.pop(impl))
                else:
                    probes.append(probe)
                    brackets[impl].record(rate, probe.passed)
                report()
    finally:
        for live in lives.values():
            _close(live)
        report()
    return out


def _close(live: Live | None) -> None:
    if live is None:
        return
    try:
        live.close()
    except Exception as exc:  # noqa: BLE001 (closing must not hide what was measured)
        live.env.notes.append(f"{live.impl}: did not close cleanly: {exc}")


CONTROL = "bare (control)"


def tail_probes(
    env: Env,
    rate: float,
    seconds: float,
    tick: Say,
    rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The worker at one rate with each suspect of its tail turned off in turn, and bare at
    the same rate as a control (what the machine and the harness give at that rate), twice over
    in alternation (A B C .. A B C ..), so a drift of the machine shows as spread, not as a
    cause. Rows go into ``rows`` as they come; a probe that raises is a failed row."""
    rows = [] if rows is None else rows
    for rnd in range(2):
        for name, impl, changes in [
            (CONTROL, "bare", {}),
            *((n, "streamscore", c) for n, c in SUSPECTS.items()),
        ]:
            tick(f"tail probe ({rnd + 1}/2): {name} at {rate:,.0f} events/s")
            live: Live | None = None
            try:
                live = Live(env, impl, changes)
                probe = live.probe(rate, seconds)
            except Exception as exc:  # noqa: BLE001 (a row of the result, not the end)
                probe = failed_probe(impl, rate, exc)
            finally:
                _close(live)
            rows.append({"suspect": name, "round": rnd} | asdict(probe))
    return rows
