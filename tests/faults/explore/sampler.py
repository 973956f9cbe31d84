"""The explorer's commit sampler: about once a second, the scoring group's committed offsets on
every input partition and, right after them, the ends of every output partition (predictions
and dead letters), for ``judge.committed_early`` to hold against what was written.

The probe consumers never subscribe: ``committed()`` on a consumer with the group's id reads the
group's offsets without joining it (as the runner's ``_committed()`` does), so sampling moves no
partition. They read ``read_committed`` (every streamscore consumer does): their high is the
last stable offset. Under exactly-once a second, ``read_uncommitted`` probe reads the high
watermark too, to tell an output not yet written from one written but held back by another
producer's open transaction.
"""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.core.settings import Settings
from services.kafka.config import consumer_config
from streams.topics import by_record
from tests.faults.explore.judge import CommitSample

PERIOD = 1.0  # seconds between samples
TIMEOUT = 5.0  # for each of the probes' calls: a broker away skips the sample


class CommitSampler:
    """Samples on a thread of its own from ``start()`` to ``stop()``; ``at`` counts from
    ``started`` (``time.monotonic()``)."""

    def __init__(self, settings: Settings, started: float, *, transactional: bool) -> None:
        self.settings, self.started, self.transactional = settings, started, transactional
        self.samples: list[CommitSample] = []
        self.skipped = 0  # samples a call failed for (the broker stopped, a coordinator moving)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, seconds: float = 120.0) -> bool:
        """Stops sampling; False when the thread did not end in ``seconds``."""
        self._stop.set()
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def _run(self) -> None:
        s = self.settings
        probe = Consumer(consumer_config(s, s.worker.scoring_group))
        uncommitted = {"isolation.level": "read_uncommitted"}
        hw_group = f"explore-hw-{uuid.uuid4().hex[:8]}"
        raw = Consumer(consumer_config(s, hw_group, **uncommitted)) if self.transactional else None
        inputs: list[TopicPartition] = []
        outputs: list[TopicPartition] = []
        try:
            while not self._stop.wait(PERIOD):  # the sampling period
                try:
                    if not inputs:
                        inputs, outputs = self._partitions(probe)
                    self.samples.append(self._one(probe, raw, inputs, outputs))
                except KafkaException:
                    self.skipped += 1
        finally:
            probe.close()
            if raw is not None:
                raw.close()

    def _partitions(self, probe: Consumer) -> tuple[list[TopicPartition], list[TopicPartition]]:
        topics = self.settings.topics
        names = [by_record(topics, r).name for r in ("Prediction", "DeadLetter")]

        def parts(name: str) -> list[TopicPartition]:
            found = probe.list_topics(name, timeout=TIMEOUT).topics[name].partitions
            return [TopicPartition(name, q) for q in sorted(found)]

        return parts(topics.events), [tp for name in names for tp in parts(name)]

    def _one(
        self,
        probe: Consumer,
        raw: Consumer | None,
        inputs: list[TopicPartition],
        outputs: list[TopicPartition],
    ) -> CommitSample:
        at = time.monotonic() - self.started
        done = probe.committed(inputs, timeout=TIMEOUT)
        committed = {tp.partition: tp.offset for tp in done if tp.error is None}
        # Only after the commit was read: an output acknowledged before that commit is below
        # these ends, however long the reads take.
        stable = {
            (tp.topic, tp.partition): probe.get_watermark_offsets(tp, timeout=TIMEOUT)[1]
            for tp in outputs
        }
        high = stable
        if raw is not None:
            high = {
                (tp.topic, tp.partition): raw.get_watermark_offsets(tp, timeout=TIMEOUT)[1]
                for tp in outputs
            }
        return CommitSample(at, committed, stable, high)
