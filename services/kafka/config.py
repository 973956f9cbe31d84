"""librdkafka configuration built from settings: right for Apache Kafka, and working on tansu."""

from __future__ import annotations

from typing import Any

from services.core.settings import Settings
from services.kafka.auth import LIBRDKAFKA_LOG, WATCH


def common_config(settings: Settings) -> dict[str, Any]:
    """Connection and security settings shared by producers, consumers and admin clients.

    >>> common_config(Settings())["bootstrap.servers"]
    '127.0.0.1:19092'
    """
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": k.client_id,
        "security.protocol": k.security_protocol,
        # librdkafka's lines through Python logging, repeats left out; its failed handshakes
        # and logins watched (services.kafka.auth): they stop a process, never loop for ever.
        "logger": LIBRDKAFKA_LOG,
        "error_cb": WATCH.error_cb,
        # Small requests go out at once: with Nagle's algorithm a lone produce or fetch can wait
        # for the peer's delayed ACK (tens of ms) before it is sent.
        "socket.nagle.disable": True,
    }
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location is not None:
        conf["ssl.ca.location"] = str(k.ssl_ca_location)
    return conf


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that commits manually, after delivery, and never auto-creates topics."""
    k = settings.kafka
    conf = common_config(settings) | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms,
        "fetch.wait.max.ms": k.fetch_wait_max_ms,
    }
    return conf | overrides


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent producer waiting for all in-sync replicas: no loss, no reordering."""
    k = settings.kafka
    conf = common_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": k.linger_ms,
        "compression.type": k.compression_type,
    }
    return conf | overrides


def admin_config(settings: Settings) -> dict[str, Any]:
    return common_config(settings)
