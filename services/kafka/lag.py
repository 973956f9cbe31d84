"""Consumer lag as the broker sees it: each group's committed offsets against the log end
(not the workers' own gauge, which a stuck or dead worker stops updating)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.kafka.config import admin_config, consumer_config

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
