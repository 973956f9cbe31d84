"""What a topic is to streamscore; the table of them lives in ``streams/topics.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name, partition count, codecs and who uses it.

    >>> TopicSpec("feed.x.v1", 3, "string", "Event", "input", "producers", "scoring").subject
    'feed.x.v1-value'
    """

    name: str
    partitions: int
    key: str  # key codec: "string" is raw UTF-8
    value_record: str  # Avro record name in schemas/, Confluent wire format
    role: str
    writers: str
    readers: str
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """Schema Registry subject of the value (TopicNameStrategy, Confluent's default)."""
        return f"{self.name}-value"


def dlq_name(topic: str) -> str:
    """The dead-letter topic of ``topic``.

    >>> dlq_name("feed.interactions.v1")
    'feed.interactions.v1.dlq'
    """
    return topic + DLQ_SUFFIX
