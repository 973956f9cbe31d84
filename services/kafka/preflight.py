"""Asking the cluster, on a connection of its own, whether it takes this process's CA and
credentials: before the control plane starts and then every few seconds while it runs, and
after a one-shot command could not reach the cluster (a refusal is then told from an outage).

A new client makes new connections, so a password changed or expired since the process's
other connections were made is refused here at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from services.core.errors import CredentialsRefused
from services.core.settings import Settings
from services.kafka.auth import WATCH, AuthWatch, LibrdkafkaLog
from services.kafka.config import common_config


def secured(settings: Settings) -> bool:
    """Whether connections carry TLS or SASL (nothing to refuse on PLAINTEXT).

    >>> secured(Settings()), secured(Settings(kafka={"security_protocol": "SASL_SSL"}))
    (False, True)
    """
    return settings.kafka.security_protocol != "PLAINTEXT"


def ask(settings: Settings, seconds: float) -> tuple[bool, AuthWatch]:
    """One metadata request on a new client: whether the cluster answered within ``seconds``,
    and the watch of this client's failed handshakes and logins (it gives up at the first).

    The client is gone when this returns: its threads are not left retrying handshakes while
    the process exits (OpenSSL's exit-time cleanup under them can crash the process)."""
    watch = AuthWatch()
    log = LibrdkafkaLog(logging.getLogger("librdkafka"), watch)
    client = Producer(common_config(settings) | {"error_cb": watch.error_cb, "logger": log})
    answered, done = threading.Event(), threading.Event()
    deadline = time.monotonic() + seconds

    def request() -> None:
        # Short requests, so that it ends soon after a refusal is seen.
        while not done.is_set() and time.monotonic() < deadline:
            try:
                client.list_topics(timeout=0.5)
            except KafkaException:
                continue
            answered.set()
            return

    # Each request blocks inside librdkafka; the client's callbacks are served here meanwhile.
    thread = threading.Thread(target=request, name="kafka-credentials", daemon=True)
    thread.start()
    while not answered.is_set() and time.monotonic() < deadline:
        client.poll(0.1)
        if watch.current() is not None:
            break
    done.set()
    thread.join(seconds + 5)
    client.poll(0)
    return answered.is_set(), watch


def check_credentials(settings: Settings, seconds: float) -> CredentialsRefused | None:
    """The refusal, when the cluster refuses this process's CA or credentials now; None when
    it answers, or stays silent (an outage is not a refusal), or security is off."""
    if not secured(settings):
        return None
    answered, watch = ask(settings, seconds)
    return None if answered else watch.verdict(settings, seconds=0)


def watch_credentials(
    settings: Settings,
    stop: Callable[[CredentialsRefused], None],
    every: float | None = None,
    watch: AuthWatch = WATCH,
) -> threading.Event:
    """Ask every ``every`` seconds (a third of ``kafka.auth_failure_seconds`` by default), on a
    daemon thread, feeding ``watch`` (readiness reads it); call ``stop`` once refusals have
    gone on for ``kafka.auth_failure_seconds``. Returns the event that ends the thread.

    For a process whose own clients librdkafka does not serve (the control plane's faust
    speaks Kafka through aiokafka)."""
    period = every if every is not None else max(1.0, settings.kafka.auth_failure_seconds / 3)
    done = threading.Event()
    if not secured(settings):
        return done

    def run() -> None:
        while not done.is_set():
            answered, seen = ask(settings, min(period, settings.kafka.request_timeout_seconds))
            run_ = seen.current()
            if answered:
                watch.answered()
            elif run_ is not None:
                watch.failed(run_[0], count=False)  # counted by the asking client's watch
            refused = watch.verdict(settings)
            if refused is not None:
                stop(refused)
                return
            done.wait(period)  # the period between two questions, not a synchronisation

    threading.Thread(target=run, name="kafka-credentials-watch", daemon=True).start()
    return done
