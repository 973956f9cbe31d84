"""The fault kit's harness: send events, run real workers (in-process or as processes), read
every output back and account for each input by its own coordinates, and record a row of the
reliability table.

An input is accounted for when a prediction carries its ``event_id`` or a dead letter carries
its (partition, offset). ``lost`` counts inputs with neither; ``duplicated`` counts copies
beyond the first. The expected values come from what was sent, never from the worker.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from services.kafka.config import consumer_config, producer_config
from streams.topics import by_record
from tests.integration.pipeline_env import Pipeline, world_events
from tests.waiting import wait_for

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Sent:
    index: int  # position in what was sent
    partition: int
    offset: int | None  # None: the delivery report did not say (see account)
    event_id: str | None  # None: not a readable event (only a dead letter can account for it)


@dataclass
class Tally:
    sent: int = 0
    predicted: int = 0  # inputs with at least one prediction
    dead_lettered: int = 0  # inputs with a dead letter and no prediction
    duplicated: int = 0  # outputs beyond the first per input
    lost: int = 0
    degraded: int = 0  # predictions flagged degraded
    reasons: Counter[str] = field(default_factory=Counter)

    def row(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "reasons" and isinstance(v, int)}


def renamed(item: tuple[bytes | None, bytes, Headers, str], k: int) -> tuple[Any, bytes, Any, str]:
    """``item`` again as a new event: its 36-character event id (the record's first field,
    after the 5-byte header and a 1-byte length) replaced in the encoded bytes."""
    key, value, headers, event_id = item
    assert len(event_id) == 36 and value[5] == 72  # zigzag(36): one length byte
    new_id = f"s{k:035d}"
    return key, value[:6] + new_id.encode() + value[42:], headers, new_id


def good_items(p: Pipeline, n: int, start: int) -> list[tuple[bytes | None, bytes, Headers, str]]:
    codec = p.codec("Interaction")
    events = world_events(p, n, start=start)
    return [
        (e["user_id"].encode(), v, [], e["event_id"])
        for e, v in zip(events, codec.encode_many(events), strict=True)
    ]


def garbage_items(
    n: int, size: int = 40, seed: int = 0
) -> list[tuple[bytes | None, bytes, Headers, None]]:
    rng = random.Random(seed)  # noqa: S311 (test data, reproducible)
    return [(f"g{i}".encode(), rng.randbytes(size), [], None) for i in range(n)]


def send(
    p: Pipeline,
    items: Iterable[tuple[bytes | None, bytes, Headers, str | None]],
    rate: float | None = None,
    **producer_overrides: Any,
) -> list[Sent]:
    """Produce ``items`` to the input topic (at ``rate`` per second when given); returns where
    each landed, from the delivery reports."""
    producer = Producer(producer_config(p.settings, **producer_overrides))
    topic = p.settings.topics.events
    sent: list[Sent] = []
    errors: list[str] = []

    def report(index: int, event_id: str | None) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                sent.append(Sent(index, msg.partition(), msg.offset(), event_id))

        return cb

    started = time.monotonic()
    for i, (key, value, headers, event_id) in enumerate(items):
        if rate is not None:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not synchronising with the worker
        producer.produce(topic, value, key, headers=headers, on_delivery=report(i, event_id))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]
    return sorted(sent, key=lambda s: s.index)


def read_topic(p: Pipeline, record: str, timeout: float = 120) -> list[Any]:
    """Every message of ``record``'s topic up to its end as it is now (high watermarks read
    first; a read-committed consumer stops at the last stable offset)."""
    topic = by_record(p.settings.topics, record)
    consumer = Consumer(consumer_config(p.settings, f"fault-reader-{uuid.uuid4().hex[:8]}"))
    try:
        parts = consumer.list_topics(topic.name, timeout=10).topics[topic.name].partitions
        ends = {
            q: consumer.get_watermark_offsets(TopicPartition(topic.name, q), timeout=10)[1]
            for q in parts
        }
        todo = {q for q, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic.name, q, OFFSET_BEGINNING) for q in todo])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    out.append(m)
                    if m.offset() + 1 >= ends[m.partition()]:
                        todo.discard(m.partition())
            for tp in consumer.position([TopicPartition(topic.name, q) for q in list(todo)]):
                if tp.offset >= ends[tp.partition]:  # control records at the end
                    todo.discard(tp.partition)
        assert not todo, f"{record}: partitions {sorted(todo)} not read to their end in time"
        return out
    finally:
        consumer.close()


def account(
    p: Pipeline,
    sent: list[Sent],
    expect_outputs: int | None = None,
    outcomes: dict[int, str] | None = None,
    reasons: dict[int, str] | None = None,
) -> Tally:
    """Read every prediction and dead letter back and account for each input; ``outcomes``
    (filled when given) says what became of each input, by its index: predicted, dead, lost;
    ``reasons`` (filled when given) the reason of a dead letter of an input, by its index."""
    if expect_outputs is not None:  # wait until at least this many outputs are there
        wait_for(
            lambda: outputs_count(p) >= expect_outputs,
            120,
            f"{expect_outputs} outputs (predictions and dead letters)",
        )
    predictions = [p.codec("Prediction").decode_one(m.value()) for m in read_topic(p, "Prediction")]
    letters = [p.codec("DeadLetter").decode_one(m.value()) for m in read_topic(p, "DeadLetter")]
    by_event = Counter(str(x["event_id"]) for x in predictions if isinstance(x, dict))
    by_place = Counter(
        (int(x["source_partition"]), int(x["source_offset"]))
        for x in letters
        if isinstance(x, dict)
    )
    reason_at = {
        (int(x["source_partition"]), int(x["source_offset"])): str(x["reason"])
        for x in letters
        if isinstance(x, dict)
    }
    reason_of: dict[str, str] = {}
    # A delivery report may carry no offset (an idempotent retry the broker answered
    # DUPLICATE_SEQUENCE_NUMBER: written once, offset not reported). Such an input is found
    # among the dead letters by the event id inside its original value.
    dead_events: Counter[str] = Counter()
    interaction = p.codec("Interaction")
    for x in letters:
        if isinstance(x, dict) and x["original_value"]:
            try:
                original = interaction.decode_one(bytes(x["original_value"]))
            except Exception:  # noqa: BLE001, S112 (garbage is not an event: nothing to match)
                continue
            if isinstance(original, dict) and original.get("event_id"):
                dead_events[str(original["event_id"])] += 1
                reason_of[str(original["event_id"])] = str(x["reason"])
    tally = Tally(sent=len(sent))
    tally.degraded = sum(1 for x in predictions if isinstance(x, dict) and x["degraded"])
    tally.reasons = Counter(str(x["reason"]) for x in letters if isinstance(x, dict))
    for s in sent:
        n_pred = by_event.get(s.event_id, 0) if s.event_id is not None else 0
        n_dead = by_place.get((s.partition, s.offset), 0)
        if s.offset is None and s.event_id is not None:
            n_dead = dead_events.get(s.event_id, 0)
        if n_pred:
            tally.predicted += 1
            outcome = "predicted"
        elif n_dead:
            tally.dead_lettered += 1
            outcome = "dead"
        else:
            tally.lost += 1
            outcome = "lost"
        if outcomes is not None:
            outcomes[s.index] = outcome
        if reasons is not None and n_dead:
            found = reason_at.get((s.partition, s.offset))
            if found is None and s.event_id is not None:
                found = reason_of.get(s.event_id)
            reasons[s.index] = found or "?"
        tally.duplicated += max(0, n_pred + n_dead - 1)
    return tally


RUNNING: list[subprocess.Popen[bytes]] = []  # killed after each test, whatever happened


class WorkerProcess:
    """`streamscore worker scoring` as a process of its own, logging to a file."""

    def __init__(
        self,
        p: Pipeline,
        log_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,  # e.g. `ip netns exec NAME`: where it runs
    ):
        self.log = log_dir / f"{name}.log"
        self.out = log_dir / f"{name}.json"
        base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
        with self.out.open("wb") as out, self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(prefix or []),
                    sys.executable,
                    "-m",
                    "streams.cli",
                    "--json",
                    "worker",
                    "scoring",
                ],
                env=base | p.env() | (env or {}),
                stdout=out,
                stderr=log,
            )
        RUNNING.append(self.proc)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_assigned(self, seconds: float = 120) -> None:
        def assigned() -> bool:
            assert self.proc.poll() is None, f"worker exited:\n{self.text()[-3000:]}"
            return any(
                "partitions assigned:" in line and not line.rstrip().endswith("none")
                for line in self.text().splitlines()
            )

        wait_for(assigned, seconds, "a partition assignment")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def stop(self, seconds: float = 120) -> int:
        self.proc.terminate()
        return self.proc.wait(seconds)

    def summary(self) -> dict[str, Any]:
        return json.loads(self.out.read_text() or "{}")


class InProcessWorker:
    """A worker on a thread of this process (its metrics are this process's)."""

    def __init__(self, make: Callable[[], Any], **run: Any) -> None:
        self.worker = make()
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=run, daemon=True)
        self.thread.start()

    def _run(self, **run: Any) -> None:
        try:
            self.result = self.worker.run(**run)
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            self.error = exc

    def stop(self, seconds: float = 60) -> Any:
        self.worker.request_stop()
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
        return self.result


REPORT: list[dict[str, Any]] = []


def record(fault: str, expected: str, observed: str, tally: Tally, seconds: float) -> None:
    """One row of the reliability table (docs/reliability.md, written by `make faults`)."""
    REPORT.append(
        {
            "fault": fault,
            "expected": expected,
            "observed": observed,
            **tally.row(),
            "seconds": round(seconds),
        }
    )


class OwnRedis:
    """A redis-server of the test's own, to stop and start again with its data (SAVE, then
    the same directory: the dump is loaded at start)."""

    def __init__(self, data_dir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        from services.core.settings import LocalSettings
        from services.embedded.redis_server import argv

        cmd = argv(LocalSettings(redis_port=self.port), self.dir)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, 20, "redis to answer")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        import redis

        redis.Redis.from_url(self.url).save()
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)


class SlowProxy:
    """A TCP proxy on loopback that delays every chunk it forwards by ``delay`` seconds."""

    def __init__(self, target_port: int, delay: float) -> None:
        import socket

        self.delay, self.target = delay, target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while chunk := src.recv(65536):
                time.sleep(self.delay)  # the latency being injected
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.server.close()


def wait_accounted(p: Pipeline, sent: list[Sent], seconds: float) -> Tally:
    """Wait until every input has an output (duplicates do not count); returns the tally."""
    deadline = time.monotonic() + seconds
    while True:
        tally = account(p, sent)
        if tally.lost == 0 or time.monotonic() > deadline:
            return tally
        time.sleep(1)  # polling the topics, not synchronising with the worker


def outputs_count(p: Pipeline) -> int:
    """Predictions plus dead letters written so far (from the topics' end offsets)."""
    total = 0
    consumer = Consumer(consumer_config(p.settings, f"fault-count-{uuid.uuid4().hex[:8]}"))
    try:
        for record in ("Prediction", "DeadLetter"):
            name = by_record(p.settings.topics, record).name
            for q in consumer.list_topics(name, timeout=10).topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, q), timeout=10)
                total += high - low
    finally:
        consumer.close()
    return total
