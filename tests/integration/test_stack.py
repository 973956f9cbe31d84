"""The session stack itself: healthy, on the broker asked for, with every topic of the table."""

from __future__ import annotations

import pytest
import redis

from services.embedded.stack import EmbeddedStack
from services.kafka.admin import list_topic_partitions
from streams.topics import topic_table
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.smoke]


def test_every_topic_exists_with_its_partition_count(stack: Stack) -> None:
    on_broker = list_topic_partitions(stack.admin(), 10)
    expected = {t.name: t.partitions for t in topic_table(stack.settings.topics)}
    assert {name: on_broker.get(name) for name in expected} == expected


def test_status_reports_the_running_broker_and_redis(stack: Stack) -> None:
    status = EmbeddedStack(stack.settings).status()
    assert status.healthy is True
    kinds = {c.name: c.kind for c in status.components}
    if stack.kind != "external":
        assert kinds["broker"] == stack.kind
    client = redis.Redis.from_url(status.redis_url)
    assert client.ping() is True
    client.close()


def test_second_up_starts_nothing(stack: Stack) -> None:
    again = EmbeddedStack(stack.settings).up(topic_table(stack.settings.topics))
    assert again.started == ()
    pids = {c.name: c.pid for c in again.components}
    assert pids == {c.name: c.pid for c in stack.status.components}
