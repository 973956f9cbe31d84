"""The explorer's runner: real worker processes, a Redis and a broker of its own, events at a
steady rate, a schedule of faults applied on time, then the invariants checked on what was
written.

Invariants (after the schedule, once every fault has ended):
- every input is predicted or dead-lettered, at least once: a valid (world) event predicted
  and never dead-lettered, a hostile one dead-lettered;
- copies of a prediction for the same event and version carry the same score (compared
  within the same ``degraded`` flag: a degraded copy is scored with the declared defaults
  instead of the features, so it may differ from a full copy, and is compared with the other
  degraded copies only);
- the group's committed offsets reach the end of every partition (lag 0: nothing stays
  paused or unread);
- no committed offset passed an input before its output was written: about once a second
  during the run the group's commits are read, then the ends of every output partition, and
  every input below a commit must have an output below those ends (``judge.committed_early``;
  an output written but held back by another producer's open transaction is counted, not a
  finding);
- under exactly-once (``--explore-guarantee=exactly_once``): no event has two predictions and
  no input two outputs, to a read_committed reader, and no open transaction holds an output
  partition's readers back once the system has settled;
- the registry's champion is one of the explorer's two versions, and a probe of
  ``PROBE_EVENTS`` events sent after settling (on the stream's producer) is scored, every copy,
  by the version the registry's rollout state routes its entity to: the champion, or the
  canary's challenger for the entities its routing picks, recomputed by the checker
  (``judge.misrouted``), the canary's share of the entities within a bound of its percent;
- every worker still running answers ``/readyz`` with 200;
- a worker that exited by itself did so with a decided error (exit 1 or 2, its last stderr
  line one of the CLI's one-line forms, not the catch-all ``error: <ExceptionClass>: ...``),
  and one we stopped with SIGTERM exited 0.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.core.errors import RegistryUnavailable
from services.domain.config import load_domain
from services.embedded.stack import BROKER, EmbeddedStack
from services.kafka.config import consumer_config, producer_config
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import RolloutState
from streams.topics import by_record, topic_table
from tests.faults.explore.judge import (
    committed_early,
    duplicated,
    generic_error,
    hit_nothing,
    misaccounted,
    misrouted,
    output_places,
    owned_from_log,
    undecided_exit,
)
from tests.faults.explore.sampler import CommitSampler
from tests.faults.explore.schedule import Op
from tests.faults.harness import (
    OwnRedis,
    Sent,
    WorkerProcess,
    account,
    garbage_items,
    good_items,
    read_topic,
)
from tests.integration.conftest import Stack, free_port
from tests.integration.pipeline_env import Pipeline, run_cli, world_events
from tests.waiting import wait_for

SETTLE_SECONDS = 180.0  # after the schedule, the most time the system gets to catch up
MAX_WORKERS = 3
_COORDINATOR = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
READY_SECONDS = 120.0  # how long a running worker may take to become ready for the checks
JOIN_SECONDS = 60.0  # how long the schedule waits for a joining worker's first partitions
RATE = 250.0  # events per second, steady
HOT_PRODUCER = "explore-hot"
PROBE_EVENTS = 200  # sent after settling, to check which versions serve whom
MODEL_OPS = ("promote", "canary", "rollback")


@dataclass
class Worker:
    proc: WorkerProcess
    port: int
    frozen: bool = False
    ended: str = ""  # how we ended it: "kill", "term", or "" while running
    slot: int = 0  # under exactly-once, its transactional id's: reused once the process is gone


@dataclass
class Run:
    """What one schedule did and saw."""

    seed: int
    ops: list[Op]
    guarantee: str = "at_least_once"
    done: list[str] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    idle: list[str] = field(default_factory=list)  # operations that hit nothing
    started_workers: int = 0

    def report(self) -> str:
        lines = [
            f"seed {self.seed} ({self.guarantee}): {len(self.ops)} operations, "
            f"{len(self.sent)} events"
        ]
        lines += [f"  {d}" for d in self.done]
        lines += [f"  hit nothing: {d}" for d in self.idle]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


class Explorer:
    """Runs one schedule against ``p`` (its Redis is ``redis``, its broker ``stack``'s)."""

    def __init__(
        self, p: Pipeline, stack: Stack, redis: OwnRedis, log_dir: Path, seconds: float
    ) -> None:
        """``stack``: the broker's own stack (its settings start and stop the broker; its
        Redis is not the one the explorer pauses)."""
        self.p, self.stack, self.redis, self.log_dir = p, stack, redis, log_dir
        self.seconds = seconds
        self.exactly_once = p.settings.worker.processing_guarantee == "exactly_once"
        self.workers: list[Worker] = []
        self.redis_paused = self.redis_stopped = self.broker_stopped = False
        self.burst_until = 0.0
        self.slow_until = 0.0
        self.hostile_due = False
        self.champion, self.challenger = "1", "2"  # with_two_versions: v1 is the champion
        self._threads: list[threading.Thread] = []
        self._sent_lock = threading.Lock()
        self.producer = Producer(producer_config(p.settings))  # the stream's, then the probe's
        self.failed: list[str] = []  # deliveries the broker refused
        self.next_index = 0  # the next world event the stream would have sent
        self.model_changed_at = 0.0  # when the last `models` command returned (monotonic)
        self.rollout: RolloutState | None = None  # the registry's, read before the probe
        self.probe: dict[str, str] = {}  # probe event id -> the entity canary routing reads

    # -- the stream ---------------------------------------------------------------------------

    def _stream(self, run: Run, stop: threading.Event) -> None:
        """Events at ``RATE`` on one producer, for as long as the schedule runs; while a burst
        lasts they carry the hot producer's id (over its rate limit: backpressure defers
        them). Where each landed comes from its delivery report."""
        producer = self.producer
        topic = self.p.settings.topics.events
        report = self._report(run)
        index, started = 0, time.monotonic()
        while not stop.is_set():
            items = good_items(self.p, int(RATE / 10), start=index)
            if time.monotonic() < self.burst_until:
                hot = [("producer-id", HOT_PRODUCER.encode())]
                items = [(k, v, hot, e) for k, v, _, e in items]
            if self.hostile_due:
                self.hostile_due = False
                items += _hostile_items(index)
            for key, value, headers, event_id in items:
                while True:
                    try:
                        producer.produce(
                            topic, value, key, headers=headers, on_delivery=report(event_id)
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)  # the broker is away: the queue is full
            index += len(items)
            producer.poll(0)
            ahead = started + index / RATE - time.monotonic()
            if ahead > 0:
                stop.wait(ahead)  # pacing the producer
        self.next_index = index
        if producer.flush(SETTLE_SECONDS) or self.failed:
            run.problems.append(f"the load generator could not deliver: {self.failed[:3]}")

    def _report(self, run: Run) -> Any:
        """A delivery callback factory: where each event landed goes into ``run.sent``."""

        def report(event_id: str | None) -> Any:
            def cb(err: Any, msg: Any) -> None:
                if err is not None:
                    self.failed.append(str(err))
                    return
                with self._sent_lock:
                    run.sent.append(Sent(len(run.sent), msg.partition(), msg.offset(), event_id))

            return cb

        return report

    # -- workers ------------------------------------------------------------------------------

    def _running(self) -> list[Worker]:
        return [w for w in self.workers if not w.ended and w.proc.proc.poll() is None]

    def _pick(self, arg: float, *, thawed: bool = True) -> Worker | None:
        candidates = [w for w in self._running() if not (thawed and w.frozen)]
        return candidates[int(arg * len(candidates))] if candidates else None

    def _join(self, run: Run) -> None:
        if len(self._running()) >= MAX_WORKERS:
            return
        port = free_port()
        env = {
            "STREAMSCORE_METRICS__ENABLED": "true",
            "STREAMSCORE_METRICS__HOST": "127.0.0.1",
            "STREAMSCORE_METRICS__PORT": str(port),
        }
        # Under exactly-once each worker slot keeps its transactional id, as a StatefulSet pod
        # keeps its name: the lowest slot whose last process is gone, so a worker started in
        # place of a killed one fences it and aborts what it left open at once.
        alive = {w.slot for w in self.workers if w.proc.proc.poll() is None}
        slot = min(n for n in range(len(self.workers) + 1) if n not in alive)
        if self.exactly_once:
            group = self.p.settings.worker.scoring_group
            env["STREAMSCORE_WORKER__TRANSACTIONAL_ID"] = f"{group}-slot{slot}"
        name = f"w{run.started_workers}"
        run.started_workers += 1
        worker = WorkerProcess(self.p, self.log_dir, name, env)
        self.workers.append(Worker(worker, port, slot=slot))

    def apply(self, op: Op, run: Run) -> str:
        """Carry out ``op``; returns what was done (for the report)."""
        kind = op.kind
        if kind == "join":
            self._join(run)
            return f"{op} -> {len(self._running())} running"
        if kind in ("leave", "kill", "freeze"):
            w = self._pick(op.arg)
            if w is None:
                return f"{op} -> no worker"
            if kind == "leave":
                w.proc.proc.send_signal(signal.SIGTERM)
                w.ended = "term"
            elif kind == "kill":
                w.proc.kill()
                w.ended = "kill"
            else:
                os.kill(w.proc.proc.pid, signal.SIGSTOP)
                w.frozen = True
            return f"{op} -> {w.proc.log.stem}"
        if kind == "thaw":
            frozen = [w for w in self.workers if w.frozen]
            for w in frozen[:1]:
                w.frozen = False
                if w.proc.proc.poll() is None:
                    os.kill(w.proc.proc.pid, signal.SIGCONT)
            return f"{op} -> {len(frozen[:1])} thawed"
        if kind == "redis_pause" and not (self.redis_paused or self.redis_stopped):
            os.kill(self._redis_pid(), signal.SIGSTOP)
            self.redis_paused = True
        elif kind == "redis_continue" and self.redis_paused:
            os.kill(self._redis_pid(), signal.SIGCONT)
            self.redis_paused = False
        elif kind == "redis_stop" and not self.redis_stopped:
            if self.redis_paused:
                os.kill(self._redis_pid(), signal.SIGCONT)
                self.redis_paused = False
            self.redis.stop()
            self.redis_stopped = True
        elif kind == "redis_start" and self.redis_stopped:
            self.redis.start()
            self.redis_stopped = False
        elif kind == "broker_stop" and not self.broker_stopped and self.stack.kind == "kafka":
            EmbeddedStack(self.stack.settings).down(only=(BROKER,))
            self.broker_stopped = True
        elif kind == "broker_start" and self.broker_stopped:
            self._broker_up()
        elif kind == "burst":
            self.burst_until = time.monotonic() + op.arg
        elif kind == "redis_slow":
            self.slow_until = time.monotonic() + op.arg
            self._background(self._slow_redis)
        elif kind in MODEL_OPS:
            return self._model_op(op, run)
        elif kind == "hostile":
            self.hostile_due = True
        else:
            return f"{op} -> nothing to do"
        return str(op)

    def _background(self, target: Any, *args: Any) -> None:
        """Ops that take a while run beside the schedule, which keeps its times."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _slow_redis(self) -> None:
        """Added latency: every client paused for 40 ms of each 80 until ``slow_until`` (a
        paused or stopped server just fails these calls)."""
        import redis

        client = redis.Redis.from_url(self.redis.url, socket_timeout=0.5)
        while time.monotonic() < self.slow_until:
            try:
                client.execute_command("CLIENT", "PAUSE", 40, "ALL")
            except (redis.RedisError, OSError):
                pass  # Redis is paused or stopped by another op: nothing to slow down
            time.sleep(0.08)  # the period of the added latency, not a synchronisation

    def _model_op(self, op: Op, run: Run) -> str:
        """A promotion of the other version, a canary of it on 30% of the entities, or a
        rollback, through the operators' CLI in a background thread. The CLI may refuse (a
        rollback with no earlier champion): that is an answer, not a finding; the CLI's
        catch-all line for an undecided exception (``error: <ExceptionClass>: ...``) is."""
        if op.kind == "promote":
            args = ["models", "promote", self.challenger, "-m", "explorer"]
            self.champion, self.challenger = self.challenger, self.champion
        elif op.kind == "canary":
            args = ["models", "canary", self.challenger, "--percent", "30", "-m", "explorer"]
        else:
            args = ["models", "rollback", "-m", "explorer"]

        def call() -> None:
            ran = run_cli(self.p.settings, *args)
            self.model_changed_at = time.monotonic()
            run.done.append(f"        {' '.join(args[:3])} -> exit {ran.returncode}")
            if ran.returncode not in (0, 2, 3) or generic_error(ran.stderr):
                run.problems.append(f"`streamscore {' '.join(args)}`: {ran.stderr[-800:]}")

        self._background(call)
        return str(op)

    def _redis_pid(self) -> int:
        assert self.redis.proc is not None
        return self.redis.proc.pid

    def _broker_up(self) -> None:
        EmbeddedStack(self.stack.settings).up(
            topic_table(self.stack.settings.topics), self.stack.kind
        )  # type: ignore[arg-type]
        self.broker_stopped = False

    def _replace_exited(self, run: Run) -> None:
        """A worker that exited by itself is a finding when it did not say why; either way an
        orchestrator starts another (so does the explorer)."""
        for w in self.workers:
            code = w.proc.proc.poll()
            if w.ended or code is None:
                continue
            w.ended = "exited"
            text = w.proc.text()
            # Decided: the last stderr line is one of the CLI's one-line error forms, not its
            # catch-all `error: <ExceptionClass>: ...` (tracebacks print only at DEBUG).
            why = undecided_exit(code, text)
            if why is not None:
                run.problems.append(
                    f"{w.proc.log.stem} exited without a decided error ({why}): {text[-1500:]}"
                )
            last = [line for line in text.splitlines() if line.strip()][-1:]
            run.done.append(f"        {w.proc.log.stem} exited {code}: {''.join(last)[-200:]}")
            self._join(run)

    # -- the run ------------------------------------------------------------------------------

    def _assigned(self) -> int:
        """Running workers that own partitions, by their logs."""
        return sum(1 for w in self._running() if owned_from_log(w.proc.text()))

    def _wait_assigned(self, w: Worker, run: Run) -> bool:
        """Wait, bounded, until a joining worker owns partitions (by its log)."""
        deadline = time.monotonic() + JOIN_SECONDS
        while time.monotonic() < deadline and w.proc.proc.poll() is None:
            if owned_from_log(w.proc.text()):
                return True
            self._replace_exited(run)
            time.sleep(0.1)  # polling the joiner's log, with a deadline
        return False

    def run(self, run: Run) -> Run:
        """Apply the schedule driven by state: a join waits until the new worker owns
        partitions, and the schedule's clock starts at the first assignment and stands still
        while a later joiner waits, so each fault lands on the workers it was meant for."""
        stop = threading.Event()
        sender = threading.Thread(target=self._stream, args=(run, stop), daemon=True)
        exactly_once = self.p.settings.worker.processing_guarantee == "exactly_once"
        sampler = CommitSampler(self.p.settings, time.monotonic(), transactional=exactly_once)
        sampler.start()
        started: float | None = None
        still = 0.0  # seconds the clock stood still for joiners

        def clock() -> float:
            return 0.0 if started is None else time.monotonic() - started - still

        sender.start()
        try:
            for op in run.ops:
                while clock() < op.at:
                    self._replace_exited(run)
                    time.sleep(0.05)  # waiting for the op's time on the schedule
                before = len(self.workers)
                done = self.apply(op, run)
                t0 = time.monotonic()
                for w in self.workers[before:]:
                    if not self._wait_assigned(w, run):
                        why = "exited" if w.proc.proc.poll() is not None else "timed out"
                        done += f" ({w.proc.log.stem} not assigned: {why})"
                if op.kind == "join" and len(self.workers) == before:
                    done += " (no worker started)"
                if started is None:
                    started = time.monotonic()
                else:
                    still += time.monotonic() - t0
                assigned = self._assigned()
                done += f" [{assigned} assigned]"
                run.done.append(done)
                if hit_nothing(op.kind, done, assigned):
                    run.idle.append(done)
            while clock() < self.seconds:
                self._replace_exited(run)
                time.sleep(0.05)
        finally:
            stop.set()
            sender.join(SETTLE_SECONDS + 30)  # its flush is bounded by SETTLE_SECONDS
            if sender.is_alive():
                run.problems.append("the load generator did not finish: events may be unsent")
            self.slow_until = 0.0
            for thread in self._threads:
                thread.join(150)
        self._end_faults(run)
        self._settle(run)
        self._probe_models(run)
        if not sampler.stop():
            run.problems.append("the commit sampler did not finish")
        self._check(run, sampler)
        self._stop_all(run)
        return run

    def _end_faults(self, run: Run) -> None:
        for w in self.workers:
            if w.frozen and w.proc.proc.poll() is None:
                os.kill(w.proc.proc.pid, signal.SIGCONT)
            w.frozen = False
        if self.redis_paused:
            os.kill(self._redis_pid(), signal.SIGCONT)
            self.redis_paused = False
        if self.redis_stopped:
            self.redis.start()
            self.redis_stopped = False
        if self.broker_stopped:
            self._broker_up()
        self._replace_exited(run)
        if not self._running():
            self._join(run)

    def _settle(self, run: Run) -> None:
        """Wait, bounded, until the group has committed every partition to its end and, under
        exactly-once, no open transaction holds an output partition's read_committed readers
        back (a killed worker's stays open until its slot's next worker fences it, or the
        transaction times out: 60 s). Right after a broker restart the coordinator may still
        be loading (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): the checker's own read is
        asked again, not failed."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            self._replace_exited(run)
            try:
                if not self._lag() and not (self.exactly_once and self._held()):
                    return
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in _COORDINATOR:
                    raise
            time.sleep(1.0)  # polling the group's offsets
        lag = self._lag()
        if lag:
            run.problems.append(f"lag still {lag} {SETTLE_SECONDS:.0f} s after the faults")
        if self.exactly_once and self._held():
            run.problems.append(
                f"an open transaction still holds back {self._held()} "
                f"{SETTLE_SECONDS:.0f} s after the faults"
            )

    def _probe_models(self, run: Run) -> None:
        """Read the registry's rollout state, then send ``PROBE_EVENTS`` new events of the
        world on the stream's producer and let the system settle again; ``_check`` holds the
        versions that scored them against the state (``judge.misrouted``)."""
        # Workers follow a registry change at once through the model-events topic, and poll
        # the registry every `poll_seconds` for one they missed (frozen, or starting): the
        # probe goes out once that declared bound has passed since the last `models` command.
        bound = self.model_changed_at + self.p.settings.model.poll_seconds + 5.0
        if self.model_changed_at and time.monotonic() < bound:
            time.sleep(max(0.0, bound - time.monotonic()))  # the bound under test, not a sync
        try:
            self.rollout = MlflowRegistry(self.p.settings).rollout_state()
        except RegistryUnavailable as exc:
            run.problems.append(f"the registry could not be read after settling: {exc}")
            return
        key_field = load_domain(self.p.settings.domain_dir).key_field
        events = world_events(self.p, PROBE_EVENTS, start=self.next_index)
        codec = self.p.codec(self.p.settings.topics.event_record)
        report = self._report(run)
        for event, value in zip(events, codec.encode_many(events), strict=True):
            key = str(event[key_field])
            event_id = str(event["event_id"])
            self.probe[event_id] = key
            self.producer.produce(
                self.p.settings.topics.events, value, key.encode(), on_delivery=report(event_id)
            )
        if self.producer.flush(60) or self.failed:
            run.problems.append(f"the probe could not be delivered: {self.failed[:3]}")
        run.done.append(f"  probe: {len(events)} events after settling, {self.rollout.describe()}")
        self._settle(run)

    def _held(self) -> dict[str, int]:
        """Output partitions whose last stable offset is below their high watermark (an open
        transaction holds read_committed readers back), by how far."""
        names = [by_record(self.p.settings.topics, r).name for r in ("Prediction", "DeadLetter")]
        group = f"explore-held-{self.p.settings.worker.scoring_group}"
        stable = Consumer(consumer_config(self.p.settings, group))
        raw = Consumer(
            consumer_config(self.p.settings, group, **{"isolation.level": "read_uncommitted"})
        )
        try:
            held = {}
            for name in names:
                for q in stable.list_topics(name, timeout=10).topics[name].partitions:
                    tp = TopicPartition(name, q)
                    lso = stable.get_watermark_offsets(tp, timeout=10)[1]
                    high = raw.get_watermark_offsets(tp, timeout=10)[1]
                    if lso < high:
                        held[f"{name}[{q}]"] = high - lso
            return held
        finally:
            stable.close()
            raw.close()

    def _committed(self) -> dict[int, int]:
        topic = self.p.settings.topics.events
        probe = Consumer(consumer_config(self.p.settings, self.p.settings.worker.scoring_group))
        try:
            parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
            done = probe.committed([TopicPartition(topic, q) for q in parts], timeout=10)
            return {tp.partition: tp.offset for tp in done}
        finally:
            probe.close()

    def _lag(self) -> dict[int, int]:
        topic = self.p.settings.topics.events
        probe = Consumer(consumer_config(self.p.settings, self.p.settings.worker.scoring_group))
        try:
            parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
            done = probe.committed([TopicPartition(topic, q) for q in parts], timeout=10)
            lag = {}
            for tp in done:
                high = probe.get_watermark_offsets(tp, timeout=10)[1]
                if max(tp.offset, 0) < high:
                    lag[tp.partition] = high - max(tp.offset, 0)
            return lag
        finally:
            probe.close()

    def _check(self, run: Run, sampler: CommitSampler) -> None:
        outcomes: dict[int, str] = {}
        reasons: dict[int, str] = {}
        tally = account(self.p, run.sent, outcomes=outcomes, reasons=reasons)
        # Strict: a world event gets a prediction, never a dead letter; hostile ones a letter.
        run.problems += misaccounted(run.sent, outcomes, reasons)
        if self.exactly_once and tally.duplicated:
            run.problems.append(
                f"exactly-once: {tally.duplicated} outputs beyond the first of an input "
                "(predictions and dead letters) to a read_committed reader"
            )
        if tally.lost:
            lost: dict[int, list[int]] = defaultdict(list)
            for s in run.sent:
                if outcomes.get(s.index) == "lost":
                    lost[s.partition].append(s.offset)
            where = {q: f"{min(o)}-{max(o)} ({len(o)})" for q, o in sorted(lost.items())}
            run.problems.append(
                f"{tally.lost} of {tally.sent} inputs neither predicted nor dead: "
                f"partition: offsets {where}; committed {self._committed()}"
            )
        # Copies of one event by one version agree (a degraded copy is scored with defaults:
        # it agrees with the other degraded copies).
        scores: dict[tuple[str, str, bool], set[float]] = defaultdict(set)
        predictions = self._decoded("Prediction")
        for x, _ in predictions:
            key = (str(x["event_id"]), str(x["model_version"]), bool(x["degraded"]))
            scores[key].add(float(x["score"]))
        differ = [k for k, v in scores.items() if len(v) > 1]
        if differ:
            run.problems.append(
                f"{len(differ)} events scored differently by one version: {differ[:3]}"
            )
        if self.exactly_once:
            pairs = ((str(x["event_id"]), str(x["model_version"])) for x, _ in predictions)
            run.problems += [f"exactly-once: {f}" for f in duplicated(pairs)]
        self._check_commits(run, sampler, predictions)
        if self.rollout is not None:
            served: dict[str, list[str]] = defaultdict(list)
            for x, _ in predictions:
                if str(x["event_id"]) in self.probe:
                    served[str(x["event_id"])].append(str(x["model_version"]))
            versions = {"1", "2"} if any(op.kind in MODEL_OPS for op in run.ops) else None
            found = misrouted(self.probe, served, self.rollout, versions)
            run.problems += [f"models: {f}" for f in found]
        for w in self._running():
            # A worker started late may still be importing on a loaded machine: while its probe
            # port refuses connections and it has not logged "probes on", it gets a bounded
            # while to come up. Once its probes answer, anything but 200 is a finding.
            deadline = time.monotonic() + READY_SECONDS
            code, body = _get(f"http://127.0.0.1:{w.port}/readyz")
            while (
                code == 0
                and "probes on" not in w.proc.text()
                and time.monotonic() < deadline
                and w.proc.proc.poll() is None
            ):
                time.sleep(1.0)  # polling the probe, with a deadline
                code, body = _get(f"http://127.0.0.1:{w.port}/readyz")
            if code != 200:
                run.problems.append(
                    f"{w.proc.log.stem} not ready: {code} "
                    f"{body[:300]!r}; its log: {w.proc.text()[-600:]!r}"
                )
        run.done.append(
            f"  accounted: {tally.predicted} predicted, {tally.dead_lettered} dead-lettered, "
            f"{tally.duplicated} duplicates, {tally.lost} lost; dead letters by reason "
            f"{dict(tally.reasons)}"
        )

    def _decoded(self, record: str) -> list[tuple[dict[str, Any], tuple[str, int, int]]]:
        """Every message of ``record``'s topic (read_committed), decoded, with its place."""
        out = []
        for m in read_topic(self.p, record):
            x = self.p.codec(record).decode_one(m.value())
            if isinstance(x, dict):
                out.append((x, (str(m.topic()), int(m.partition()), int(m.offset()))))
        return out

    def _check_commits(
        self,
        run: Run,
        sampler: CommitSampler,
        predictions: list[tuple[dict[str, Any], tuple[str, int, int]]],
    ) -> None:
        """The commit invariant, at every sample the sampler took during the run."""
        letters = [
            ((int(x["source_partition"]), int(x["source_offset"])), place)
            for x, place in self._decoded("DeadLetter")
        ]
        outputs = output_places(
            run.sent, ((str(x["event_id"]), place) for x, place in predictions), letters
        )
        found, judged, held = committed_early(run.sent, outputs, sampler.samples)
        run.problems += [f"commit before output: {f}" for f in found]
        run.done.append(
            f"  commits sampled: {len(sampler.samples)} samples ({sampler.skipped} skipped), "
            f"{judged} inputs judged, {held} inputs' outputs written but held back by an open "
            "transaction then"
        )
        if not sampler.samples:
            run.problems.append("the commit sampler took no sample")
        elif run.sent and not judged:
            run.problems.append("the commit sampler judged no input: no sampled commit passed one")

    def _stop_all(self, run: Run) -> None:
        for w in self._running():
            w.proc.proc.send_signal(signal.SIGTERM)
            w.ended = "term"
        for w in self.workers:
            if w.ended == "term":
                code = w.proc.proc.wait(120)
                # Killed by the signal with nothing logged: it arrived while Python was still
                # importing, before our handler existed (under load, seconds after the exec);
                # nothing had started, so nothing can be lost. Anything else is a finding.
                if code == -signal.SIGTERM and not w.proc.text().strip():
                    run.done.append(f"        {w.proc.log.stem} stopped while still importing")
                elif code != 0:
                    run.problems.append(
                        f"{w.proc.log.stem} exited {code} on SIGTERM: {w.proc.text()[-1500:]}"
                    )


def _hostile_items(seed: int) -> list[tuple[bytes | None, bytes, Any, None]]:
    """Garbage, an oversized key and a huge header: dead letters, each with its reason."""
    items: list[tuple[bytes | None, bytes, Any, None]] = list(garbage_items(5, seed=seed))
    items.append((b"k" * 5000, b"\x00" * 10, [], None))
    items.append((b"k", b"\x00" * 10, [("huge", b"x" * 20_000)], None))
    return items


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback)
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


def summary_row(run: Run) -> dict[str, Any]:
    kinds: dict[str, int] = defaultdict(int)
    for op in run.ops:
        kinds[op.kind] += 1
    return {
        "seed": run.seed,
        "guarantee": run.guarantee,
        "ops": len(run.ops),
        "events": len(run.sent),
        "problems": len(run.problems),
        "hit_nothing": len(run.idle),
        "kinds": json.dumps(kinds),
    }


__all__ = ["Explorer", "Run", "summary_row", "wait_for"]
