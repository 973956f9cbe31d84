"""The capacity probes' reader: reads an implementation's outputs as they come and tallies the
first read of each distinct event, so that a duplicate output cannot stand in for a lost one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from load.bench import Env
from services.kafka.config import consumer_config


class Tally:
    """The outputs of one probe, counted as they come (never rescanned).

    An event is its event id and its event time: the generator reuses 5,000 pre-encoded bodies,
    each send stamped with its own due time, so the pair is unique within a run. Only events
    due at or after ``start`` count (a probe's own); the first read of each is its sample.

    >>> t = Tally()
    >>> t.start(1000.0)
    >>> t.add([("a", 1_000_000), ("a", 1_000_000), ("b", 999_999), ("b", 1_000_001)], 1000.5)
    >>> t.answered, t.duplicates, t.samples
    (2, 1, [(1000000, 1000.5), (1000001, 1000.5)])
    """

    def __init__(self) -> None:
        self.since_ms = 0
        self.samples: list[tuple[int, float]] = []  # (event time ms, first read time s)
        self.duplicates = 0
        self._seen: set[tuple[str, int]] = set()

    def start(self, t0: float) -> None:
        """Count from here: events due at or after ``t0`` (epoch seconds)."""
        self.since_ms = int(t0 * 1000)
        self.samples, self.duplicates, self._seen = [], 0, set()

    def add(self, events: list[tuple[str, int]], read_at: float) -> None:
        for event_id, et in events:
            if et < self.since_ms:
                continue
            if (event_id, et) in self._seen:
                self.duplicates += 1
                continue
            self._seen.add((event_id, et))
            self.samples.append((et, read_at))

    @property
    def answered(self) -> int:
        return len(self.samples)


class Reader:
    """Reads an output topic as it fills into a ``Tally``. It assigns itself the topic's
    partitions (no group: no heartbeats, no joins) and can pause its fetching, so an
    implementation that is not under test costs the broker nothing."""

    def __init__(self, env: Env, topic: str) -> None:
        self.env, self.topic = env, topic
        self.tally = Tally()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"the reader found no partitions of {topic} in 60 s")

    @property
    def samples(self) -> list[tuple[int, float]]:
        return self.tally.samples

    def _run(self) -> None:
        c = Consumer(
            consumer_config(self.env.settings, f"bench-cap-{uuid.uuid4().hex[:6]}")
            | {
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
                # An exactly-once worker's outputs count when their transaction commits.
                "isolation.level": "read_committed",
            }
        )
        parts: list[TopicPartition] = []
        deadline = time.monotonic() + 60
        while not parts and time.monotonic() < deadline:
            meta = c.list_topics(self.topic, timeout=5).topics.get(self.topic)
            if meta is not None and meta.error is None and meta.partitions:
                parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        c.assign(parts)
        self._ready.set()
        paused = False
        try:
            while not self._stop.is_set():
                if self._paused.is_set() != paused:
                    paused = self._paused.is_set()
                    (c.pause if paused else c.resume)(c.assignment())
                got = c.consume(1000, 0) or c.consume(1, 0.05)
                batch = [m for m in got if m.error() is None]
                if not batch:
                    continue
                now = time.time()
                recs = self.env.out_codec.decode_many([m.value() for m in batch])
                events = [(r["event_id"], r["event_time"]) for r in recs if isinstance(r, dict)]
                with self._changed:
                    self.tally.add(events, now)
                    self._changed.notify_all()
        finally:
            c.close()

    def start(self, t0: float) -> None:
        """Tally a new probe: events due at or after ``t0``."""
        with self._changed:
            self.tally.start(t0)

    def wait(self, until: Callable[[Tally], bool], timeout: float) -> bool:
        """Until ``until(tally)`` holds, at most ``timeout`` seconds; whether it does."""
        with self._changed:
            return self._changed.wait_for(lambda: until(self.tally), timeout)

    def pause(self, on: bool) -> None:
        (self._paused.set if on else self._paused.clear)()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
