"""Consumer lag as the broker sees it: each group's committed offsets against the log end
(not the workers' own gauge, which a stuck or dead worker stops updating)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.kafka.config import admin_config, consumer_config
from services.kafka.ranges import watermarks

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed here
    log_end: int
    lag: int  # log_end - committed (log_end - log_start when nothing is committed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_lag(settings: Settings, groups: list[str]) -> list[PartitionLag]:
    """Per group, topic and partition it has committed on, its lag.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    admin = AdminClient(admin_config(settings))
    consumer = Consumer(consumer_config(settings, "streamscore-lag-reader"))
    out: list[PartitionLag] = []
    try:
        for group in groups:
            request = [ConsumerGroupTopicPartitions(group)]
            future = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT)[group]
            committed = future.result(timeout=TIMEOUT).topic_partitions or []
            for tp in sorted(committed, key=lambda t: (t.topic, t.partition)):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=TIMEOUT
                )
                done = tp.offset if tp.offset >= 0 else None
                lag = high - (done if done is not None else low)
                out.append(PartitionLag(group, tp.topic, tp.partition, done, high, max(0, lag)))
    except (KafkaException, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"cannot read consumer lag from {settings.kafka_bootstrap}: {exc or 'no answer'}"
        ) from exc
    finally:
        consumer.close()
    return out


@dataclass(frozen=True, slots=True)
class TopicRate:
    topic: str
    partitions: int
    messages: int  # held now: log end - log start, summed over partitions
    per_second: float  # log-end growth over the sampling interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def topic_rates(settings: Settings, topics: list[str], interval: float) -> list[TopicRate]:
    """Per topic, the messages it holds and how fast its log end grows, from two readings of
    the watermarks ``interval`` seconds apart.

    Raises:
        BrokerUnavailable: the broker did not answer.
        NotFound: a topic does not exist.
    """

    consumer = Consumer(consumer_config(settings, "streamscore-lag-reader"))
    try:
        first = {t: watermarks(consumer, t) for t in topics}
        started = time.monotonic()
        time.sleep(interval)  # the sampling interval of a rate, not synchronisation
        second = {t: watermarks(consumer, t) for t in topics}
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    out = []
    for t in topics:
        held = sum(high - low for low, high in second[t].values())
        grown = sum(second[t][p][1] - first[t].get(p, (0, 0))[1] for p in second[t])
        out.append(TopicRate(t, len(second[t]), held, grown / elapsed if elapsed > 0 else 0.0))
    return out
