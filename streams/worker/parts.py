"""What a scoring worker is wired to: its topics, and the drift monitors with their output."""

from __future__ import annotations

from dataclasses import dataclass

from services.codec.avro import AvroCodec
from services.drift.monitor import DriftMonitor
from services.kafka.topics import TopicSpec


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """The topics a scoring worker reads and writes."""

    input: TopicSpec
    predictions: TopicSpec
    dead_letters: TopicSpec
    shadow: TopicSpec | None = None


@dataclass(frozen=True, slots=True)
class DriftOutput:
    """The drift monitors, and where their signals go."""

    monitor: DriftMonitor
    topic: TopicSpec
    codec: AvroCodec
