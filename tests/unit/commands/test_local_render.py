"""What `local up` and `local status` print: the export lines, pasted into another shell, keep
the stack embedded; a running stack is described as running, not as "started nothing"."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from services.core.settings import Settings
from services.embedded.stack import ComponentStatus, StackStatus
from streams.commands.local import _render_status

KAFKA, REDIS = "127.0.0.1:29092", "redis://127.0.0.1:26379/0"


def _status(started: tuple[str, ...] = (), redis_running: bool = True) -> StackStatus:
    broker = ComponentStatus("broker", "kafka", KAFKA, True, 4242, True, True, detail="ok")
    redis = ComponentStatus(
        "redis", "redis", REDIS, redis_running, 4343 if redis_running else None, redis_running,
        redis_running, detail="ok" if redis_running else "not running",
    )  # fmt: skip
    return StackStatus("kafka", KAFKA, REDIS, (broker, redis), started)


def _printed(status: StackStatus, after_up: bool) -> list[str]:
    out = io.StringIO()
    _render_status(status, Console(file=out, width=200, color_system=None), after_up)
    return out.getvalue().splitlines()


@pytest.fixture
def local_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_LOCAL__KAFKA_PORT", "29092")
    monkeypatch.setenv("STREAMSCORE_LOCAL__REDIS_PORT", "26379")


@pytest.mark.usefixtures("local_ports")
def test_pasted_export_lines_keep_the_services_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    exports = [ln for ln in _printed(_status(), after_up=False) if ln.startswith("export ")]
    assert len(exports) == 2
    for line in exports:
        name, value = line.removeprefix("export ").split("=", 1)
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.kafka_bootstrap, s.redis_url) == (KAFKA, REDIS)
    assert (s.external_kafka, s.external_redis) == (False, False)


@pytest.mark.usefixtures("local_ports")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),  # another port
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:29092,127.0.0.1:29093"),
        ("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.prod:29092"),
        ("STREAMSCORE_REDIS__URL", "redis://127.0.0.1:26379/1"),  # another database
        ("STREAMSCORE_REDIS__URL", "rediss://127.0.0.1:26379/0"),  # TLS: not ours
        ("STREAMSCORE_REDIS__URL", "redis://cache.prod:26379/0"),
    ],
)
def test_any_other_address_is_external(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.external_kafka if "KAFKA" in name else s.external_redis) is True


def test_status_of_a_running_stack_says_what_runs() -> None:
    lines = _printed(_status(), after_up=False)
    assert "running: broker (kafka, pid 4242), redis (redis, pid 4343)" in lines
    assert not any("started" in ln for ln in lines)


def test_up_says_what_it_started_and_what_was_already_running() -> None:
    lines = _printed(_status(started=("redis",)), after_up=True)
    assert "running: broker (kafka, pid 4242), redis (redis, pid 4343); started: redis" in lines
    lines = _printed(_status(), after_up=True)
    assert (
        "running: broker (kafka, pid 4242), redis (redis, pid 4343); "
        "started nothing, all were running"
    ) in lines


def test_status_names_what_does_not_run() -> None:
    lines = _printed(_status(redis_running=False), after_up=False)
    assert "running: broker (kafka, pid 4242); not running: redis" in lines
