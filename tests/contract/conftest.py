"""Contract-suite fixtures: a real redis-server subprocess (no mocks of Redis)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from services.core.settings import LocalSettings
from services.embedded import redis_server
from services.embedded.process import ProcessRecord, spawn, start_ticks, stop
from tests.redis_fixtures import (
    redis_cluster_secure,
    redis_sentinel_secure,
    redis_standalone_secure,
)

# fixtures, shared with faults
__all__ = ["redis_cluster_secure", "redis_sentinel_secure", "redis_standalone_secure"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path_factory.mktemp("redis")
    argv = redis_server.argv(LocalSettings(redis_port=port), home)
    proc = spawn(argv, home / "redis.log", home)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    record = ProcessRecord("redis", "redis", proc.pid, tuple(argv), "", "", 0.0, ticks)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url
    stop(record)
