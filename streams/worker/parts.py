"""What a scoring worker is wired to: its topics, and the drift monitors with their output."""

from __future__ import annotations

from dataclasses import dataclass

from services.codec.avro import AvroCodec
from services.drift.monitor import DriftMonitor
from services.features.log import feature_log_records
from services.features.spec import FeatureSpec
from services.kafka.topics import TopicSpec
from services.scoring.results import BatchResult


@dataclass(frozen=True, slots=True)
class FeatureLogOutput:
    """Where a batch's served entity rows go (``FeatureLog``), and how they are encoded."""

    topic: TopicSpec
    codec: AvroCodec
    spec: FeatureSpec

    def encode(self, result: BatchResult, now_ms: int) -> list[bytes]:
        """The batch's ``FeatureLog`` values: one, or a few for a very large batch."""
        block = result.served
        if block is None or result.rows is None:
            return []
        records = feature_log_records(
            self.spec,
            block.model_name,
            block.field("event_id"),
            block.versions,
            result.rows,
            now_ms,
        )
        return self.codec.encode_many(records)


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    """The topics a scoring worker reads and writes."""

    input: TopicSpec
    predictions: TopicSpec
    dead_letters: TopicSpec
    shadow: TopicSpec | None = None
    feature_log: FeatureLogOutput | None = None  # None: STREAMSCORE_FEATURES__LOG=false


@dataclass(frozen=True, slots=True)
class DriftOutput:
    """The drift monitors, and where their signals go."""

    monitor: DriftMonitor
    topic: TopicSpec
    codec: AvroCodec
