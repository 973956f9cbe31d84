"""Topic administration and broker health over confluent-kafka's AdminClient."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.core.errors import BrokerUnavailable, ConfigError
from services.kafka.topics import TopicSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicState:
    """What ``ensure_topics`` found or did for one topic."""

    name: str
    partitions: int
    created: bool


def list_topic_partitions(admin: AdminClient, timeout: float) -> dict[str, int]:
    """Partition count of every topic on the cluster.

    Raises:
        BrokerUnavailable: no answer within ``timeout`` seconds.
    """
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot list topics: {exc}") from exc
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


def ensure_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], timeout: float
) -> list[TopicState]:
    """Create the topics that are missing; check the partition count of those that exist.

    Raises:
        ConfigError: an existing topic has a different partition count than its spec.
        BrokerUnavailable: the cluster did not answer.
    """
    specs = list(specs)
    existing = list_topic_partitions(admin, timeout)
    for spec in specs:
        have = existing.get(spec.name)
        if have is not None and have != spec.partitions:
            raise ConfigError(
                f"topic {spec.name} has {have} partitions, the topic table says {spec.partitions}"
            )
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=-1,
                    config=dict(s.config),
                )
                for s in missing
            ],
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerUnavailable(f"cannot create topic {name}: {exc}") from exc
            logger.info("created topic %s", name)
    # Metadata can lag behind creation for a moment; wait until every topic is listed.
    deadline = time.monotonic() + timeout
    while True:
        now = list_topic_partitions(admin, timeout)
        if all(s.name in now for s in specs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return [TopicState(s.name, now.get(s.name, 0), s.name not in existing) for s in specs]


def count_brokers(admin: AdminClient, timeout: float) -> int:
    """How many brokers the cluster reports as its members (DescribeCluster).

    Raises:
        BrokerUnavailable: no answer within ``timeout`` seconds.
    """
    try:
        future = admin.describe_cluster(request_timeout=timeout)
        return len(future.result(timeout=timeout + 1).nodes)
    except (KafkaException, TimeoutError) as exc:
        raise BrokerUnavailable(f"cannot describe the cluster: {exc}") from exc


def wait_for_brokers(
    count: Callable[[], int],
    brokers: int,
    deadline_seconds: float,
    *,
    every: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Ask ``count`` until at least ``brokers`` brokers are members, or the deadline passes: a
    topic created while a broker is still joining gets its replicas on the others only.

    Returns:
        The number of brokers the cluster reported last.

    Raises:
        BrokerUnavailable: fewer within the deadline, naming how many answered.

    >>> answers = iter([1, 2, 3])
    >>> wait_for_brokers(lambda: next(answers), 3, 60.0, sleep=lambda _: None)
    3
    """
    end = clock() + deadline_seconds
    seen, failure = 0, ""
    while True:
        try:
            seen, failure = count(), ""
        except BrokerUnavailable as exc:
            failure = f": {exc}"
        if seen >= brokers:
            return seen
        if clock() >= end:
            raise BrokerUnavailable(
                f"{seen} of {brokers} brokers in the cluster after {deadline_seconds:g} s{failure}"
            )
        logger.info("waiting for brokers: %d of %d", seen, brokers)
        sleep(every)
