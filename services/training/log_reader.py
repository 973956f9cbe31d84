"""Read the feature log for a training set: only the time range its events need, streamed, and
only the rows of its labelled events kept, with every record and row left out counted.

A batch is logged when it is scored, after its events happened, by the clock of the worker's
host, not of the events' producers: the range runs from the slack
(``STREAMSCORE_FEATURES__LOG_SLACK_SECONDS``, default ``LOG_SLACK_MS``) before the earliest
event's time to the slack after the newest (a worker that was further behind logged rows the
read does not reach; those events count as not in the log, and ``not_logged_causes`` says so).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message

from services.codec.avro import AvroCodec
from services.core.metrics import FEATURE_LOG_SKIPPED
from services.core.settings import Settings, domain_declares
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.kafka.config import consumer_config
from services.kafka.ranges import iter_ranges, offsets_at, watermarks
from services.replay.plan import Range

logger = logging.getLogger(__name__)
LOG_SLACK_MS = 3_600_000  # the setting's default: rows logged this long around the events' times
DEFAULT_FEATURE_LOG = "feed.feature-log.v1"  # TopicSettings' default: the feed's own log


def not_logged_causes(slack_ms: int) -> str:
    """Why an event has no row in the feature log, for the lines that count them: the read
    range misses rows logged more than the slack after the newest event's time as surely as
    retention drops old ones.

    >>> "scored more than 1 h after the newest" in not_logged_causes(3_600_000)
    True
    >>> "more than 90 s after" in not_logged_causes(90_000)
    True
    """
    hours = slack_ms / 3_600_000
    slack = f"{hours:g} h" if hours >= 1 else f"{slack_ms / 1000:g} s"
    return (
        f"older than the log's retention, never scored, or scored more than {slack} after the "
        "newest event's time (STREAMSCORE_FEATURES__LOG_SLACK_SECONDS)"
    )


def feature_log_topic(settings: Settings) -> str | None:
    """The domain's feature-log topic: what ``domain.json`` declares (``topics.feature_log``)
    or the setting when it was changed from the default; None for a domain with neither (the
    default is the feed's log, whose rows are another domain's)."""
    topics = domain_declares(settings.domain_dir).get("topics")
    if isinstance(topics, dict) and topics.get("feature_log"):
        return settings.topics.feature_log
    value = settings.topics.feature_log
    return value if value and value != DEFAULT_FEATURE_LOG else None


@dataclass
class LogRead:
    """What a read of the feature log gave: the index of the rows kept, and what was left out
    (``skipped``: ``undecodable``, ``other_spec`` records; ``out_of_range`` records logged
    before the range; rows of events with ``no_label`` or ``not_in_training_set``)."""

    topic: str
    index: FeatureLogIndex
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """One line for a command's output.

        >>> from services.features.spec import FeatureSpec
        >>> read = LogRead("t", FeatureLogIndex(FeatureSpec("v", ()), []), 3)
        >>> read.skipped.update({"no_label": 2})
        >>> read.describe()
        'feature log t: 3 records read, 0 rows used; skipped: 2 rows with no label'
        """
        said = {
            "undecodable": "undecodable records",
            "other_spec": "records of another feature spec",
            "out_of_range": "records logged outside the events' time range",
            "no_label": "rows with no label",
            "not_in_training_set": "rows of events not in this training set",
        }
        parts = [f"{n:,} {said.get(k, k)}" for k, n in sorted(self.skipped.items()) if n]
        used = len(self.index)
        line = f"feature log {self.topic}: {self.records:,} records read, {used:,} rows used"
        return line + (f"; skipped: {', '.join(parts)}" if parts else "")


def read_training_rows(
    settings: Settings,
    spec: FeatureSpec,
    codec: AvroCodec,
    topic: str,
    events: Sequence[Mapping[str, Any]],
    labelled: set[str],
    timeout: float,
) -> LogRead:
    """The logged rows of ``labelled`` events among ``events``, read from the records logged
    within the slack (``settings.features.log_slack_seconds``) of the events' times; the skips
    counted
    in ``LogRead.skipped`` and in ``streamscore_feature_log_skipped_total{reason}``.

    Raises:
        NotFound: the topic does not exist.
        BrokerUnavailable: the range could not be read to its end (one line, exit 1).
    """
    read = LogRead(topic, FeatureLogIndex(spec, []))
    if not events:
        return read
    times = [int(e["event_time"]) for e in events]
    slack = settings.features.log_slack_seconds * 1000
    since, until = min(times) - slack, max(times) + slack
    known = {str(e["event_id"]) for e in events}

    def reason(event_id: str) -> str:
        return "no_label" if event_id in known else "not_in_training_set"

    def records() -> Iterator[dict[str, Any]]:
        for m in _messages(settings, topic, since, until, timeout):
            stamp = m.timestamp()[1]
            if 0 <= stamp < since:  # offsets_for_times found later ones first: out of order
                read.skipped["out_of_range"] += 1
                continue
            read.records += 1
            decoded = codec.decode_one(m.value())  # a Rejected for bad bytes, never raises
            if not isinstance(decoded, dict):
                read.skipped["undecodable"] += 1
                continue
            yield decoded

    index = FeatureLogIndex(spec, records(), wanted=labelled, skip_reason=reason)
    read.index = index
    read.skipped["other_spec"] += index.skipped_records
    read.skipped.update(index.skipped_rows)
    for name, n in read.skipped.items():
        if n:
            FEATURE_LOG_SKIPPED.labels(reason=name).inc(n)
    logger.info("%s", read.describe())
    return read


def _messages(
    settings: Settings, topic: str, since: int, until: int, timeout: float
) -> Iterator[Message]:
    """The messages of ``topic`` with timestamps from ``since`` to before ``until`` (by
    ``offsets_for_times``), in batches, never all held at once."""
    consumer = Consumer(consumer_config(settings, f"streamscore-log-{uuid.uuid4().hex[:8]}"))
    try:
        marks = watermarks(consumer, topic)
        partitions = sorted(marks)
        starts = offsets_at(consumer, topic, partitions, since)
        ends = offsets_at(consumer, topic, partitions, until)
        ranges = []
        for p in partitions:
            high = marks[p][1]
            end = ends[p] if ends[p] >= 0 else high
            start = starts[p] if starts[p] >= 0 else high
            ranges.append(Range(p, start, min(end, high)))
        for batch in iter_ranges(consumer, topic, ranges, stall_timeout=timeout):
            yield from batch
    finally:
        consumer.close()
