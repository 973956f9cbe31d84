"""Refused credentials and untrusted certificates, seen across every Kafka client of a process.

librdkafka answers a failed TLS handshake or SASL login by trying again, for ever, and logs each
try (one worker given the wrong CA logged about 770 such lines in 30 s on the three-node
cluster, and never stopped). Here:

- ``classify`` tells such a failure from librdkafka's error events and log lines;
- ``AuthWatch`` keeps the process's current run of them (when it began, the latest, which
  brokers); any sign the cluster answered (an assignment, a message, an acknowledged output)
  ends it. Readiness fails while a run lasts, and a run that has lasted
  ``kafka.auth_failure_seconds`` stops the process with one line (``CredentialsRefused``, exit 2);
- ``LibrdkafkaLog`` is the logger librdkafka writes through: a line repeated within a minute is
  counted, not written again (the next one says how many were left out), and the failures are
  logged at WARNING and counted in ``streamscore_kafka_auth_failures_total{cause}``: the one
  ERROR is the stop.

One watch per process (``WATCH``): librdkafka's clients are made in many places (the worker's
consumer and producers, the model watcher, the probes), and the verdict is about the process's
credentials, whichever client met the refusal.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.core import metrics
from services.core.errors import CredentialsRefused
from services.core.settings import Settings

TLS = "tls"
AUTHENTICATION = "authentication"
# librdkafka's error names for each cause, and the words its lines use.
_CODES = {
    "_SSL": TLS,
    "_AUTHENTICATION": AUTHENTICATION,
    "SASL_AUTHENTICATION_FAILED": AUTHENTICATION,
}
_TLS_WORDS = ("SSL handshake failed", "certificate verify failed")
_AUTH_WORDS = ("SASL authentication error", "Authentication failed")
# librdkafka's log lines start with the thread: "[thrd:sasl_ssl://127.0.0.1:19093/bootstrap]: ".
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")
# "sasl_ssl://127.0.0.1:19093/bootstrap: ..." or ".../1: ...": the broker a line is about.
_BROKER = re.compile(r"^(?:[a-z_]+://)?(?P<broker>[^\s/]+:\d+)(?:/\w+)?:\s+")
# What varies between two reports of one failure: the time and state, the suppressed count.
_VARYING = re.compile(r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)")
# OpenSSL's own codes ("error:0A000086:SSL routines::"): noise in a line for a person.
_OPENSSL = re.compile(r"error:[0-9A-Fa-f]+:[^:]*:[^:]*:")


def _normal(text: str) -> str:
    """``text`` without what varies between two reports of one failure: the thread, the time
    and state, the count librdkafka suppressed.

    >>> _normal("[thrd:ssl://h:1/1]: ssl://h:1/1: Disconnected (after 5ms in state UP)")
    'ssl://h:1/1: Disconnected'
    """
    return _VARYING.sub("", _THREAD.sub("", text)).strip()


def classify(text: str, code: str | None = None) -> str | None:
    """``tls`` or ``authentication`` when ``text`` (or librdkafka's error ``code``) reports a
    failed handshake or login, else None.

    >>> classify("sasl_ssl://h:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
    ...     "routines::certificate verify failed: broker certificate could not be verified")
    'tls'
    >>> classify("h:9093/1: SASL authentication error: Authentication failed during "
    ...     "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512")
    'authentication'
    >>> classify("h:9093/1: Connection refused", "_TRANSPORT") is None
    True
    """
    if code in _CODES:
        return _CODES[code]
    if any(w in text for w in _TLS_WORDS):
        return TLS
    if any(w in text for w in _AUTH_WORDS):
        return AUTHENTICATION
    return None


@dataclass(frozen=True, slots=True)
class Failure:
    """One reported failure: its cause, the broker (host:port) when the report names it, and
    librdkafka's words for a person (without the broker, the timing and OpenSSL's codes)."""

    cause: str
    broker: str | None
    detail: str

    @classmethod
    def parse(cls, text: str, cause: str) -> Failure:
        """
        >>> f = Failure.parse("sasl_ssl://127.0.0.1:19093/bootstrap: SSL handshake failed: "
        ...     "error:0A000086:SSL routines::certificate verify failed (after 4ms in state "
        ...     "SSL_HANDSHAKE)", "tls")
        >>> f.broker, f.detail
        ('127.0.0.1:19093', 'SSL handshake failed: certificate verify failed')
        """
        text = _normal(text)
        found = _BROKER.match(text)
        broker = found.group("broker") if found else None
        detail = text[found.end() :] if found else text
        return cls(cause, broker, _OPENSSL.sub("", detail).strip())


class AuthWatch:
    """The process's current run of failed handshakes and logins (thread-safe: librdkafka's
    callbacks come on whichever thread polls a client).

    Args:
        clock: monotonic seconds (a test's own).
    """

    # librdkafka reports an identical failure of one broker at most every 30 s: a silence
    # longer than this ends the run (the next failure starts a new one).
    GAP_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last = 0.0
        self._latest: Failure | None = None
        self._brokers: set[str] = set()
        self.reports = 0  # in the current run

    def failed(self, failure: Failure, *, count: bool = True) -> None:
        """One reported failure: counted (unless another watch counted it), and the run goes
        on (or starts)."""
        if count:
            metrics.KAFKA_AUTH_FAILURES.labels(cause=failure.cause).inc()
        now = self._clock()
        with self._lock:
            if self._first is None or now - self._last > self.GAP_SECONDS:
                self._first, self.reports, self._brokers = now, 0, set()
            self._last, self._latest = now, failure
            self.reports += 1
            if failure.broker:
                self._brokers.add(failure.broker)

    def answered(self) -> None:
        """The cluster answered this process (it read, was assigned, had an output
        acknowledged): the run, if any, is over. Cheap when there is none (every batch)."""
        if self._first is None:
            return
        with self._lock:
            self._first, self._latest, self.reports, self._brokers = None, None, 0, set()

    def error_cb(self, err: Any) -> None:
        """confluent-kafka's ``error_cb``: a failure of a handshake or login is watched; every
        error event goes to the log (deduplicated), as librdkafka logs them without one."""
        text = err.str()
        cause = classify(text, err.name())
        if cause is not None:
            self.failed(Failure.parse(text, cause))
        level = logging.ERROR if err.fatal() else logging.WARNING
        LIBRDKAFKA_LOG.write(level, "ERROR", "", text)

    def current(self) -> tuple[Failure, float, list[str]] | None:
        """The latest failure, how long the run has lasted, its brokers; None: no run."""
        with self._lock:
            if self._first is None or self._latest is None:
                return None
            if self._clock() - self._last > self.GAP_SECONDS:
                return None
            return self._latest, self._last - self._first, sorted(self._brokers)

    def problem(self) -> str | None:
        """Readiness: what fails now, one line; None when nothing does.

        >>> w = AuthWatch(clock=lambda: 5.0)
        >>> w.failed(Failure("tls", "h:1", "SSL handshake failed: certificate verify failed"))
        >>> w.problem()
        'tls failing (h:1): SSL handshake failed: certificate verify failed'
        >>> w.answered(); w.problem() is None
        True
        """
        run = self.current()
        if run is None:
            return None
        latest, _, brokers = run
        return f"{latest.cause} failing ({', '.join(brokers) or 'broker'}): {latest.detail}"

    def verdict(
        self, settings: Settings, seconds: float | None = None
    ) -> CredentialsRefused | None:
        """The stop, once failures have gone on for ``seconds`` (``kafka.auth_failure_seconds``
        when not given; 0: any failure) with nothing answered; else None."""
        run = self.current()
        limit = settings.kafka.auth_failure_seconds if seconds is None else seconds
        if run is None or run[1] < limit:
            return None
        return refusal(settings, run[0], run[2], run[1])

    def raise_if_refused(self, settings: Settings) -> None:
        """Raise the verdict when there is one (the worker asks each time it takes a batch).

        Raises:
            CredentialsRefused: every handshake or login refused for
                ``kafka.auth_failure_seconds``, nothing answered meanwhile (a wrong CA, a
                changed password): librdkafka would retry for ever; one line instead.
        """
        refused = self.verdict(settings)
        if refused is not None:
            raise refused


def refusal(
    settings: Settings, failure: Failure, brokers: list[str], seconds: float
) -> CredentialsRefused:
    """The one line that stops a process whose credentials or CA the cluster refuses: the
    principal, the brokers, the cause and what to check; never a secret.

    >>> s = Settings(kafka={"sasl_username": "streamscore-worker", "sasl_password": "pw-9",
    ...     "sasl_mechanism": "SCRAM-SHA-512", "security_protocol": "SASL_SSL"})
    >>> line = str(refusal(s, Failure("authentication", "h:1", "SASL authentication error: "
    ...     "Authentication failed"), ["h:1", "h:2"], 30.2))
    >>> line[:76]
    'streamscore-worker could not authenticate to h:1, h:2 with SCRAM-SHA-512 for'
    >>> "SASL_AUTHENTICATION_FAILED" in line, "pw-9" in line
    (True, False)
    """
    k = settings.kafka
    who = k.sasl_username or f"this client ({k.security_protocol})"
    where = ", ".join(brokers) or settings.kafka_bootstrap
    took = f" for {seconds:.0f} s" if seconds >= 1 else ""
    if failure.cause == TLS:
        ca = k.ssl_ca_location or "the system's CA bundle"
        hint = (
            f"check that STREAMSCORE_KAFKA__SSL_CA_LOCATION ({ca}) holds the CA that signed the "
            "brokers' certificates"
            if "certificate verify failed" in failure.detail
            else f"check STREAMSCORE_KAFKA__SECURITY_PROTOCOL ({k.security_protocol}) and "
            f"STREAMSCORE_KAFKA__SSL_CA_LOCATION ({ca}) against the brokers' listeners"
        )
        return CredentialsRefused(
            f"{who} could not connect to {where}{took}: TLS handshake refused "
            f"({failure.detail}): {hint}"
        )
    return CredentialsRefused(
        f"{who} could not authenticate to {where} with {k.sasl_mechanism or 'SASL'}{took} "
        f"(SASL_AUTHENTICATION_FAILED: {failure.detail}): check its user name and password "
        "(STREAMSCORE_KAFKA__SASL_USERNAME, STREAMSCORE_KAFKA__SASL_PASSWORD)"
    )


class LibrdkafkaLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """The logger librdkafka's clients write through (confluent-kafka calls
    ``log(level, "%s [%s] %s", facility, client, text)``).

    A line seen in the last ``REPEAT_SECONDS`` (from any client, at any timing) is left out and
    counted; the next one written says how many were. Failed handshakes and logins go to the
    watch and are logged at WARNING at most.
    """

    REPEAT_SECONDS = 60.0
    _MAX_REMEMBERED = 500

    def __init__(
        self,
        logger: logging.Logger,
        watch: AuthWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, {})
        self.watch = watch
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # line -> (written at, left out since)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 3:
            facility, client, text = (str(a) for a in args)
        else:
            facility, client, text = "", "", str(msg) % args if args else str(msg)
        cause = classify(text)
        if cause is not None:
            if self.watch is not None:
                self.watch.failed(Failure.parse(text, cause))
            level = min(level, logging.WARNING)
        self.write(level, facility, client, text)

    def write(self, level: int, facility: str, client: str, text: str) -> None:
        """Log one line of librdkafka's unless the same line was written a moment ago."""
        # The same words from a log line and an error event, any client, any timing: one line.
        key = _normal(text)
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.REPEAT_SECONDS:
                self._seen[key] = (seen[0], seen[1] + 1)
                return
            left_out = seen[1] if seen is not None else 0
            self._seen[key] = (now, 0)
            if len(self._seen) > self._MAX_REMEMBERED:
                old = [k for k, (at, _) in self._seen.items() if now - at >= self.REPEAT_SECONDS]
                for k in old or list(self._seen)[: len(self._seen) // 2]:
                    del self._seen[k]
        more = ""
        if left_out:
            more = f" ({left_out} more like it in {self.REPEAT_SECONDS:.0f} s not shown)"
        self.logger.log(level, "%s [%s] %s%s", facility, client, text, more)


WATCH = AuthWatch()
# librdkafka's own log lines go through Python logging (its format and level), not straight to
# stderr, deduplicated.
LIBRDKAFKA_LOG = LibrdkafkaLog(logging.getLogger("librdkafka"), WATCH)
