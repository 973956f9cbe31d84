"""The client SDK: send events and read predictions for any configured domain (docs/clients.md).

``EventProducer`` checks each event as the scoring worker will (the Avro schema, then the
domain's rules), so a bad event raises ``InvalidEvent`` in the caller's code instead of becoming
a dead letter later; it frames events in the Confluent wire format, keys them by the domain's key
field and adds the ``producer-id`` header that rate limits read.

``PredictionConsumer`` decodes predictions, drops redeliveries (the same ``event_id`` within a
window: at-least-once delivery can repeat a prediction after a crash or a rebalance), and commits
only what the caller has handled.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from fastavro.validation import ValidationError, validate

from services.codec.factory import codec_for
from services.core.errors import BrokerUnavailable, StreamMLError
from services.core.records import PRODUCER_HEADER
from services.core.settings import Settings
from services.domain.config import Domain, domain_of
from services.kafka.config import consumer_config, producer_config
from services.validation.rules import validate_one
from streams.topics import by_record

_NO_DEFAULT = object()


class InvalidEvent(StreamMLError, ValueError):
    """An event the worker would refuse; nothing was sent. ``field`` and ``rule`` name why
    (``rule`` is a dead-letter reason code, or ``required``, ``type``, ``unknown_field``)."""

    def __init__(self, field: str, rule: str, detail: str, index: int | None = None) -> None:
        where = f"event {index}: " if index is not None else ""
        super().__init__(f"{where}{field}: {rule}: {detail}")
        self.field, self.rule, self.detail, self.index = field, rule, detail, index


class DeliveryFailed(StreamMLError):
    """Events the broker did not acknowledge (each with its error); the others were sent."""

    def __init__(self, failures: list[Delivery]) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} events not delivered, first {first.event_id}: {first.error}"
        )
        self.failures = failures


logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery report."""

    event_id: str
    topic: str
    partition: int
    offset: int
    error: str | None = None


class EventValidator:
    """The producer's checks, without a producer: the schema (required fields, types, enum
    symbols, no unknown fields), then the domain's rules. The HTTP API uses it too."""

    def __init__(self, settings: Settings) -> None:
        self.domain = domain_of(settings)
        record = self.domain.records[self.domain.event_record]
        self._record = record
        self._schema = record.parsed
        self._fields = [(f["name"], f.get("default", _NO_DEFAULT)) for f in record.source["fields"]]
        self._names = {n for n, _ in self._fields}

    def __call__(self, event: Any, index: int | None = None) -> dict[str, Any]:
        """The event as it will be sent (defaults filled), or ``InvalidEvent``."""
        if not isinstance(event, Mapping):
            raise InvalidEvent(
                "", "type", f"an event is an object, not {type(event).__name__}", index
            )
        unknown = sorted(str(k) for k in set(event) - self._names)
        if unknown:
            raise InvalidEvent(
                unknown[0][:64],
                "unknown_field",
                f"{self.domain.event_record} has no such field",
                index,
            )
        out: dict[str, Any] = {}
        for name, default in self._fields:
            if name in event:
                out[name] = event[name]
            elif default is not _NO_DEFAULT:
                out[name] = default
            else:
                raise InvalidEvent(
                    name, "required", "missing, and the schema gives no default", index
                )
        try:
            validate(out, self._schema, raise_errors=True, strict=True)
        except (ValidationError, ValueError, TypeError, OverflowError) as exc:
            errors = getattr(exc, "errors", None)
            name = str(errors[0].field).rsplit(".", 1)[-1] if errors else ""
            types = {f["name"]: f["type"] for f in self._record.source["fields"]}
            wanted = _type_name(types.get(name, "?"))
            got = type(out.get(name)).__name__
            raise InvalidEvent(
                name, "type", f"a {got} where the schema wants {wanted}", index
            ) from None
        problem = validate_one(out, self.domain.rules, int(time.time() * 1000))
        if problem is not None:
            raise InvalidEvent(problem.field, problem.reason.value, problem.detail, index)
        return out


class EventProducer:
    """Validate, frame, key and send events to the domain's input topic (docs/clients.md has
    examples that a test runs)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        producer_id: str = "sdk",
        topic: str | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
        **config: Any,
    ) -> None:
        self.settings = settings or Settings()
        self.domain: Domain = domain_of(self.settings)
        t = self.settings.topics
        self.topic = topic or t.events
        self._codec = codec_for(self.settings, by_record(t, t.event_record))
        self._validator = EventValidator(self.settings)
        self._headers: list[tuple[str, str | bytes | None]] = [
            (PRODUCER_HEADER, producer_id.encode())
        ]
        self._on_delivery = on_delivery
        self._producer = Producer(producer_config(self.settings, **config))
        self.delivered = 0
        self.failures: list[Delivery] = []

    # -- checks -------------------------------------------------------------------------------
    def validate(self, event: Mapping[str, Any], index: int | None = None) -> dict[str, Any]:
        """The event as it will be sent (defaults filled), or ``InvalidEvent``."""
        return self._validator(event, index)

    # -- sending ------------------------------------------------------------------------------
    def send(self, event: Mapping[str, Any]) -> str:
        """Validate and send one event (asynchronously: ``flush`` waits for the broker);
        returns its ``event_id``."""
        return self.send_many([event])[0]

    def send_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every event, then send them all: one invalid event raises and none is
        sent."""
        checked = [self.validate(e, i) for i, e in enumerate(events)]
        payloads = [self._codec.encode_one(e) for e in checked]
        key_field = self.domain.key_field
        ids = []
        for event, payload in zip(checked, payloads, strict=True):
            event_id = str(event["event_id"])
            self._produce(str(event.get(key_field, event_id)).encode(), payload, event_id)
            ids.append(event_id)
        self._producer.poll(0)
        return ids

    def _produce(self, key: bytes, value: bytes, event_id: str) -> None:
        def report(err: KafkaError | None, msg: Message) -> None:
            d = Delivery(
                event_id,
                msg.topic() or self.topic,
                msg.partition() or 0,
                msg.offset() or -1,
                None if err is None else str(err),
            )
            if err is None:
                self.delivered += 1
            else:
                self.failures.append(d)
            if self._on_delivery is not None:
                self._on_delivery(d)

        deadline = time.monotonic() + 30
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, headers=self._headers, on_delivery=report
                )
                return
            except BufferError:  # the local queue is full: let the broker catch up
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"{self.settings.kafka_bootstrap}: the send queue stayed full for 30 s"
                    ) from None
                self._producer.poll(0.1)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event sent so far is acknowledged.

        Raises:
            DeliveryFailed: some events were refused by the broker (reported once).
            BrokerUnavailable: events still unacknowledged after ``timeout`` seconds.
        """
        left = self._producer.flush(timeout)
        if self.failures:
            failures, self.failures = self.failures, []
            raise DeliveryFailed(failures)
        if left:
            raise BrokerUnavailable(
                f"{left} events not acknowledged by {self.settings.kafka_bootstrap} "
                f"within {timeout:g} s"
            )

    def close(self) -> None:
        """Release the Schema Registry client's connections (when one is configured). Call
        ``flush()`` first: what is not yet acknowledged is not waited for here."""
        self._codec.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.flush()
            else:
                self._producer.flush(10)  # deliver what was sent; the caller's error wins
        finally:
            self.close()


@dataclass(frozen=True, slots=True)
class Prediction:
    """One decoded prediction, and where it came from. ``score`` is what the domain's task
    predicts: a probability (binary), a value (regression), or the top class's probability
    (multiclass, with ``predicted_class`` and ``probabilities``)."""

    event_id: str
    score: float
    model_version: str
    variant: str
    degraded: bool
    missing_features: tuple[str, ...]
    record: dict[str, Any] = field(repr=False)
    topic: str = ""
    partition: int = 0
    offset: int = 0

    @property
    def predicted_class(self) -> str | None:
        """A multiclass prediction's top class; None for the other tasks."""
        top = self.record.get("predicted_class")
        return None if top is None else str(top)

    @property
    def probabilities(self) -> dict[str, float]:
        """A multiclass prediction's probability per class; empty for the other tasks."""
        return dict(self.record.get("probabilities") or {})


class PredictionConsumer:
    """Iterate over decoded predictions; commit only what the caller has handled.

    Iterating yields each prediction once per ``event_id`` within ``dedupe_window`` (the last
    so many ids). With ``auto_commit=True`` a prediction counts as handled when the caller
    asks for the next one (a crash redelivers at most the one in hand). With
    ``auto_commit=False`` nothing counts as handled until the caller calls ``commit()``, which
    confirms every prediction handed out so far: leaving the ``with`` block or ``close()``
    commits only what was confirmed, so predictions the caller failed to store come again.
    Redeliveries and undecodable records skipped on the way never move a partition's commit
    past a prediction handed out and not yet confirmed.
    """

    def __init__(
        self,
        group_id: str,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        dedupe_window: int = 100_000,
        auto_commit: bool = True,
        poll_seconds: float = 0.5,
        **config: Any,
    ) -> None:
        self.settings = settings or Settings()
        t = self.settings.topics
        self.topic = topic or t.predictions
        self._codec = codec_for(self.settings, by_record(t, t.prediction_record))
        self._consumer = Consumer(consumer_config(self.settings, group_id, **config))
        self._consumer.subscribe([self.topic], on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._window = dedupe_window
        self._auto = auto_commit
        self._poll = poll_seconds
        self._read: dict[tuple[str, int], int] = {}  # next offset after the last one read
        # the first offset handed out and not yet confirmed, per partition
        self._unconfirmed: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._stopped = False
        self.duplicates = 0
        self.undecodable = 0

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """What was confirmed stays committed for the next owner; the rest it reads again."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        try:
            self._commit_positions(keys)
        except KafkaException as exc:  # a fenced member's commit: the next owner re-reads
            logger.info("commit on revoke not accepted (%s): read again by the next owner", exc)
        self._drop(keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: nothing may be committed for these."""
        self._drop([(tp.topic, tp.partition) for tp in partitions])

    def _drop(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            self._read.pop(key, None)
            self._unconfirmed.pop(key, None)
            self._committed.pop(key, None)

    def poll(self, timeout: float | None = None) -> Prediction | None:
        """The next new prediction, or None when none arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + (self._poll if timeout is None else timeout)
        if self._auto:
            self._unconfirmed.clear()  # asking for the next one: the one in hand was handled
        while not self._stopped:
            msg = self._consumer.poll(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            where = (msg.topic() or self.topic, msg.partition() or 0)
            offset = msg.offset() or 0
            self._read[where] = offset + 1
            record = self._codec.decode_one(msg.value())
            if not isinstance(record, dict):
                self.undecodable += 1  # skipped: nothing for the caller to handle
                continue
            event_id = str(record["event_id"])
            if event_id in self._seen:
                self.duplicates += 1
                self._seen.move_to_end(event_id)
                continue
            self._seen[event_id] = None
            if len(self._seen) > self._window:
                self._seen.popitem(last=False)
            self._unconfirmed.setdefault(where, offset)
            return Prediction(
                event_id,
                float(record["score"]),
                str(record["model_version"]),
                str(record["variant"]),
                bool(record["degraded"]),
                tuple(record["missing_features"]),
                record,
                msg.topic() or self.topic,
                msg.partition() or 0,
                offset,
            )
        return None

    def __iter__(self) -> Iterator[Prediction]:
        while not self._stopped:
            p = self.poll()
            if p is None:
                continue
            yield p
            if self._auto:
                self.commit()  # the caller asked for the next one: this one was handled

    def commit(self) -> None:
        """Confirm every prediction handed out so far, the one in hand included, and commit
        (synchronously)."""
        self._unconfirmed.clear()
        self._commit_positions(None)

    def _commit_positions(self, only: list[tuple[str, int]] | None) -> None:
        """Commit, per partition, up to the first prediction not confirmed (or all read)."""
        keys = self._read if only is None else [k for k in only if k in self._read]
        positions = {
            key: self._unconfirmed.get(key, self._read[key])
            for key in keys
            if self._unconfirmed.get(key, self._read[key]) != self._committed.get(key)
        }
        if not positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise
        self._committed.update(positions)

    def stop(self) -> None:
        """Make iteration end at the next poll (from a signal handler or another thread)."""
        self._stopped = True

    def close(self) -> None:
        """Commit what was confirmed and leave the group. Predictions handed out and not
        confirmed (the one in hand, or with ``auto_commit=False`` all since ``commit()``) are
        not committed: the group delivers them again."""
        try:
            self._commit_positions(None)
        finally:
            self._consumer.close()
            self._codec.close()

    def __enter__(self) -> PredictionConsumer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " or ".join(_type_name(t) for t in avro_type)
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            return "one of " + ", ".join(avro_type["symbols"])
        return str(avro_type.get("logicalType") or avro_type.get("type"))
    return str(avro_type)
