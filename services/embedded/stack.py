"""``streamscore local up | down | status``: start, find, check and stop the embedded stack."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
from confluent_kafka.admin import AdminClient

from services.core.errors import BrokerUnavailable, EmbeddedStackError, FeatureStoreUnavailable
from services.core.settings import Settings
from services.embedded import kafka as apache_kafka
from services.embedded import kafka_cluster, prometheus, redis_server, tansu
from services.embedded.process import (
    ProcessRecord,
    is_running,
    spawn,
    start_ticks,
    stop,
    stop_all,
    tail,
)
from services.embedded.redis_cluster import RedisClusterStack
from services.embedded.redis_cluster import seed_url as redis_cluster_seed
from services.kafka.acls import grants
from services.kafka.admin import ensure_topics, list_topic_partitions
from services.kafka.config import admin_config
from services.kafka.topics import TopicSpec
from services.redisconn.client import connect

logger = logging.getLogger(__name__)

BrokerChoice = Literal["auto", "kafka", "tansu"]
BROKER, REDIS, PROMETHEUS = "broker", "redis", "prometheus"
# `local up --cluster`: three secured Kafka nodes in place of the one broker.
CLUSTER_NODES = tuple(kafka_cluster.node_name(n) for n in kafka_cluster.NODES)
# ... and a Redis Cluster (three primaries, three replicas) in place of the one Redis.
REDIS_CLUSTER_NODES = RedisClusterStack.NODE_NAMES


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One service of the stack as `status` sees it."""

    name: str  # "broker" or "redis"
    kind: str  # "kafka", "tansu", "redis", or "external"
    address: str
    managed: bool  # started by this stack (False: external, or not running)
    pid: int | None
    running: bool
    healthy: bool
    log_path: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StackStatus:
    """The whole stack: where to connect, what runs, what `up` started and which topics exist."""

    broker: str
    bootstrap_servers: str
    redis_url: str
    components: tuple[ComponentStatus, ...]
    started: tuple[str, ...] = ()
    topics: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def resolve_broker(choice: BrokerChoice, settings: Settings) -> tuple[str, str]:
    """Which embedded broker to run and why: Kafka when it can run, unless tansu is asked for.

    Raises:
        EmbeddedStackError: ``kafka`` was asked for and cannot run here.
    """
    ok, why = apache_kafka.availability(settings.local)
    if choice == "tansu":
        return "tansu", "asked for tansu"
    if choice == "kafka":
        if not ok:
            raise EmbeddedStackError(f"cannot run Apache Kafka: {why}")
        return "kafka", why
    return ("kafka", why) if ok else ("tansu", f"falling back to tansu: {why}")


def port_open(port: int, timeout: float = 0.2) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kafka_answers(settings: Settings, timeout: float) -> bool:
    """True when the broker returns metadata naming at least one broker."""
    conf = admin_config(settings) | {"logger": logger, "socket.connection.setup.timeout.ms": 2000}
    try:
        meta = AdminClient(conf).list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 (any failure means "not answering"; KafkaException mostly)
        return False
    return bool(meta.brokers)


def redis_answers(settings: Settings, timeout: float) -> bool:
    """True when Redis answers PING."""
    try:
        client = connect(settings.redis, settings.redis_url, socket_timeout=timeout)
    except FeatureStoreUnavailable:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class EmbeddedStack:
    """The broker and Redis that `local up` runs as loopback subprocesses under ``home/local``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.home / "local"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- up -------------------------------------------------------------------------------
    def up(
        self,
        topics: Sequence[TopicSpec],
        broker: BrokerChoice | None = None,
        with_prometheus: bool = False,
        cluster: bool = False,
    ) -> StackStatus:
        """Start what is not running, wait until everything answers, create the topics.

        A second call finds the running stack and starts nothing. External services named by
        the settings are never started, only checked.

        Raises:
            EmbeddedStackError: a service would not start or answer; its log tail is included.
        """
        choice: BrokerChoice = broker or self.settings.local.broker
        started: list[str] = []
        with self._locked():
            try:
                if not cluster and not self.settings.external_redis and self._ensure_redis():
                    started.append(REDIS)
                if cluster:
                    started += self._ensure_kafka_cluster(topics)
                    started += self._ensure_redis_cluster()
                elif not self.settings.external_kafka:
                    if self._ensure_broker(choice):
                        started.append(BROKER)
                    admin = AdminClient(admin_config(self.settings) | {"logger": logger})
                    ensure_topics(admin, topics, self.settings.kafka.request_timeout_seconds)
                if with_prometheus and self._ensure_prometheus():
                    started.append(PROMETHEUS)
            except BaseException:
                # Leave nothing half-started: stop what this call started, then report.
                for name in started:
                    record = ProcessRecord.load(self.state_dir, name)
                    if record is not None:
                        stop(record)
                        ProcessRecord.forget(self.state_dir, name)
                raise
        status = self.status()
        if not status.healthy:
            bad = [f"{c.name}: {c.detail}" for c in status.components if not c.healthy]
            raise EmbeddedStackError("stack is not healthy after up: " + "; ".join(bad))
        return StackStatus(
            status.broker,
            status.bootstrap_servers,
            status.redis_url,
            status.components,
            tuple(started),
            status.topics,
        )

    def _ensure_redis_cluster(self) -> list[str]:
        """The Redis Cluster of `up --cluster`; its users' settings go into the roles' env
        files beside Kafka's."""
        redis_stack = RedisClusterStack(self.settings, self.state_dir)
        info = redis_stack.up()
        redis_stack.add_to_env_files(self.settings.home / "cluster" / "env")
        logger.info("redis cluster ready on %s in %.1f s", info.seed, info.seconds)
        return [redis_stack.record_name(n) for n in info.started]

    def _ensure_redis(self) -> bool:
        record = ProcessRecord.load(self.state_dir, REDIS)
        if record is not None and is_running(record):
            self._wait(record, lambda: redis_answers(self.settings, 1.0))
            return False
        ProcessRecord.forget(self.state_dir, REDIS)
        port = self.settings.local.redis_port
        self._refuse_busy_port(port, "Redis", "STREAMSCORE_LOCAL__REDIS_PORT")
        argv = redis_server.argv(self.settings.local, self.settings.home / "redis")
        record = self._start(REDIS, "redis", argv, self.settings.redis_url)
        self._wait(record, lambda: redis_answers(self.settings, 1.0))
        logger.info("redis ready on %s (pid %d)", self.settings.redis_url, record.pid)
        return True

    def _ensure_prometheus(self) -> bool:
        port = self.settings.local.prometheus_port
        record = ProcessRecord.load(self.state_dir, PROMETHEUS)
        if record is not None and is_running(record):
            self._wait(record, lambda: prometheus.answers(port))
            return False
        ProcessRecord.forget(self.state_dir, PROMETHEUS)
        self._refuse_busy_port(port, "Prometheus", "STREAMSCORE_LOCAL__PROMETHEUS_PORT")
        argv = prometheus.argv(self.settings.home, port)
        record = self._start(PROMETHEUS, "prometheus", argv, f"http://127.0.0.1:{port}")
        self._wait(record, lambda: prometheus.answers(port))
        logger.info("prometheus ready on http://127.0.0.1:%d (pid %d)", port, record.pid)
        return True

    def _ensure_broker(self, choice: BrokerChoice) -> bool:
        record = ProcessRecord.load(self.state_dir, BROKER)
        if record is not None and is_running(record):
            if choice != "auto" and record.kind != choice:
                raise EmbeddedStackError(
                    f"a {record.kind} broker is already running (pid {record.pid}); "
                    "run `streamscore local down` before switching brokers"
                )
            self._wait(record, lambda: kafka_answers(self.settings, 2.0))
            return False
        ProcessRecord.forget(self.state_dir, BROKER)
        kind, why = resolve_broker(choice, self.settings)
        logger.info("starting %s broker (%s)", kind, why)
        local = self.settings.local
        self._refuse_busy_port(local.kafka_port, "the broker", "STREAMSCORE_LOCAL__KAFKA_PORT")
        if kind == "kafka":
            self._refuse_busy_port(
                local.kafka_controller_port,
                "the KRaft controller",
                "STREAMSCORE_LOCAL__KAFKA_CONTROLLER_PORT",
            )
            argv = apache_kafka.prepare(local, self.settings.home / "kafka")
        else:
            argv = tansu.argv(local)
        record = self._start(BROKER, kind, argv, self.settings.kafka_bootstrap)
        self._wait(record, lambda: kafka_answers(self.settings, 2.0))
        logger.info("%s broker ready on %s (pid %d)", kind, record.address, record.pid)
        return True

    def _ensure_kafka_cluster(self, topics: Sequence[TopicSpec]) -> list[str]:
        """Start the nodes not running, wait for all three, then apply ACLs and topics as
        the admin. Returns the nodes started."""
        cluster_dir = self.settings.home / "cluster"
        running = [
            r
            for r in (ProcessRecord.load(self.state_dir, n) for n in CLUSTER_NODES)
            if r is not None and is_running(r)
        ]
        t0 = time.monotonic()
        argvs = kafka_cluster.prepare(self.settings, cluster_dir)
        admin_settings = kafka_cluster.admin_settings(self.settings)
        started = []
        for node, argv in argvs.items():
            name = kafka_cluster.node_name(node)
            if any(r.name == name for r in running):
                continue
            ProcessRecord.forget(self.state_dir, name)
            port = kafka_cluster.client_port(self.settings.local, node)
            for p in (port, port + 10, port + 20):
                self._refuse_busy_port(p, f"Kafka node {node}", "STREAMSCORE_LOCAL__CLUSTER_PORT")
            self._start(name, "kafka", argv, f"127.0.0.1:{port}")
            started.append(name)
        for name in CLUSTER_NODES:
            record = ProcessRecord.load(self.state_dir, name)
            if record is not None:
                self._wait(record, lambda: kafka_cluster.answers(admin_settings, 3, 2.0))
        admin = AdminClient(admin_config(admin_settings) | {"logger": logger})
        timeout = max(30.0, self.settings.kafka.request_timeout_seconds)
        acls = kafka_cluster.apply_acls(admin, grants(self.settings), timeout)
        ensure_topics(admin, topics, timeout)
        logger.info(
            "kafka cluster ready on %s in %.1f s (%d ACLs)",
            kafka_cluster.bootstrap(self.settings.local),
            time.monotonic() - t0,
            acls,
        )
        return started

    @staticmethod
    def _refuse_busy_port(port: int, what: str, env: str) -> None:
        if port_open(port):
            raise EmbeddedStackError(
                f"port {port} for {what} is in use by a process this stack did not start; "
                f"stop it or choose another port with {env}"
            )

    def _start(self, name: str, kind: str, argv: list[str], address: str) -> ProcessRecord:
        log_path = self.state_dir / f"{name}.log"
        proc = spawn(argv, log_path, cwd=self.settings.home)
        ticks = start_ticks(proc.pid)
        if ticks is None:
            raise EmbeddedStackError(f"{kind} exited at once; log:\n" + tail(log_path))
        record = ProcessRecord(
            name, kind, proc.pid, tuple(argv), address, str(log_path), time.time(), ticks
        )
        record.save(self.state_dir)
        return record

    def _wait(self, record: ProcessRecord, answers: Any) -> None:
        deadline = time.monotonic() + self.settings.local.start_timeout_seconds
        while time.monotonic() < deadline:
            if not is_running(record):
                ProcessRecord.forget(self.state_dir, record.name)
                raise EmbeddedStackError(
                    f"{record.kind} exited during startup; last log lines:\n"
                    + tail(Path(record.log_path))
                )
            if answers():
                return
            time.sleep(0.25)
        raise EmbeddedStackError(
            f"{record.kind} did not answer on {record.address} within "
            f"{self.settings.local.start_timeout_seconds:.0f}s; last log lines:\n"
            + tail(Path(record.log_path))
        )

    # -- down / status --------------------------------------------------------------------
    def down(self, only: Iterable[str] | None = None) -> list[ProcessRecord]:
        """Stop the processes this stack started (``only``: just these components, e.g. what
        one `up` call started); returns those that were running. A component started by an
        earlier `local up`, or not by us at all, is left alone when not named."""
        stopped: list[ProcessRecord] = []
        # In this order; the nodes of each cluster together (see stop_all).
        stages = ((PROMETHEUS,), (BROKER,), CLUSTER_NODES, REDIS_CLUSTER_NODES, (REDIS,))
        with self._locked():
            for stage in stages:
                names = [n for n in stage if only is None or n in set(only)]
                records = [r for r in (ProcessRecord.load(self.state_dir, n) for n in names) if r]
                for record in stop_all(records):
                    stopped.append(record)
                    logger.info("stopped %s (pid %d)", record.kind, record.pid)
                for name in names:
                    ProcessRecord.forget(self.state_dir, name)
        return stopped

    def status(self) -> StackStatus:
        """Health of each component, without starting or stopping anything."""
        s = self.settings
        broker = self._component(
            BROKER, s.external_kafka, s.kafka_bootstrap, lambda: kafka_answers(s, 3.0)
        )
        redis_c = self._component(
            REDIS, s.external_redis, s.redis_url, lambda: redis_answers(s, 2.0)
        )
        topics: dict[str, int] = {}
        if broker.healthy:
            admin = AdminClient(admin_config(s) | {"logger": logger})
            with contextlib.suppress(BrokerUnavailable):
                topics = {
                    k: v
                    for k, v in list_topic_partitions(
                        admin, s.kafka.request_timeout_seconds
                    ).items()
                    if not k.startswith("__")
                }
        components: tuple[ComponentStatus, ...] = (broker, redis_c)
        redis_nodes = self._redis_cluster_components()
        if redis_nodes and not redis_c.running:
            components = (broker, *redis_nodes)  # the Redis Cluster stands in for the one Redis
        nodes = self._cluster_components()
        if nodes:
            # The cluster stands in for the one broker (which `up --cluster` does not start).
            rest = components[1:]
            components = (*nodes, *rest) if not broker.running else (broker, *nodes, *rest)
        if ProcessRecord.load(self.state_dir, PROMETHEUS) is not None:
            port = s.local.prometheus_port
            components += (
                self._component(
                    PROMETHEUS,
                    False,
                    f"http://127.0.0.1:{port}",
                    lambda: prometheus.answers(port),
                ),
            )
        kind, servers = broker.kind, s.kafka_bootstrap
        if nodes and not broker.running:
            kind, servers = "kafka-cluster", kafka_cluster.bootstrap(s.local)
        url = redis_cluster_seed(s) if redis_nodes and not redis_c.running else s.redis_url
        return StackStatus(kind, servers, url, components, (), topics)

    def _redis_cluster_components(self) -> tuple[ComponentStatus, ...]:
        """The Redis Cluster's nodes, when `up --cluster` started them (else nothing)."""
        if all(ProcessRecord.load(self.state_dir, n) is None for n in REDIS_CLUSTER_NODES):
            return ()
        redis_stack = RedisClusterStack(self.settings, self.state_dir)
        return tuple(
            self._component(name, False, redis_stack.address(i), lambda i=i: redis_stack.answers(i))
            for i, name in enumerate(REDIS_CLUSTER_NODES)
        )

    def _cluster_components(self) -> tuple[ComponentStatus, ...]:
        """The cluster's nodes, when `up --cluster` started them (else nothing)."""
        if all(ProcessRecord.load(self.state_dir, n) is None for n in CLUSTER_NODES):
            return ()
        try:
            admin_settings = kafka_cluster.admin_settings(self.settings)
        except EmbeddedStackError:
            return ()
        return tuple(
            self._component(
                kafka_cluster.node_name(n),
                False,
                f"127.0.0.1:{kafka_cluster.client_port(self.settings.local, n)}",
                lambda: kafka_cluster.answers(admin_settings, 1, 3.0),
            )
            for n in kafka_cluster.NODES
        )

    def _component(self, name: str, external: bool, address: str, answers: Any) -> ComponentStatus:
        if external:
            ok = bool(answers())
            return ComponentStatus(
                name,
                "external",
                address,
                False,
                None,
                ok,
                ok,
                detail="external, reachable" if ok else "external, not answering",
            )
        record = ProcessRecord.load(self.state_dir, name)
        if record is None or not is_running(record):
            return ComponentStatus(
                name,
                record.kind if record else "none",
                address,
                False,
                None,
                False,
                False,
                detail="not running (run `streamscore local up`)",
            )
        ok = bool(answers())
        return ComponentStatus(
            name,
            record.kind,
            address,
            True,
            record.pid,
            True,
            ok,
            record.log_path,
            detail="answering" if ok else "running but not answering",
        )
