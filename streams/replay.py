"""Replaying a topic range: copy it to another topic, or re-score it with one model version into
a sandbox topic, exactly once, resumably (the IO around ``services.replay`` and
``services.scoring.pipeline``).

Each batch is one Kafka transaction: its outputs and its consumer group's offsets commit
together, so an interrupted replay, run again, continues after the last committed batch and no
event reaches the sandbox twice (for consumers reading ``read_committed``, as ours do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from services.codec.factory import codec_for
from services.core.errors import BrokerUnavailable, ConfigError, NotFound
from services.core.records import Inbound
from services.core.settings import Settings
from services.dlq.letter import dead_letter_headers, dead_letter_key, encode_dead_letters
from services.kafka.admin import ensure_topics, list_topic_partitions
from services.kafka.config import admin_config, producer_config
from services.kafka.inbound import to_inbound
from services.kafka.offsets import next_offsets
from services.kafka.ranges import committed, iter_ranges, ranges_since, watermarks
from services.kafka.topics import TopicSpec
from services.replay.plan import Range, ReplayPlan, clamp, remaining
from services.scoring.accounting import account
from services.scoring.gate import DependencyGate
from services.scoring.registry import MlflowRegistry
from services.scoring.stages import Stages
from streams.topics import by_record

logger = logging.getLogger(__name__)

# One transaction's outputs wait at most this long for the broker.
COMMIT_TIMEOUT_S = 60.0
# How long a re-score waits for Redis or the schema registry before it stops with the error.
DEPENDENCY_PATIENCE_SECONDS = 120.0


def group_of(run: str) -> str:
    return f"streamscore-replay-{run}"


@dataclass
class Outcome:
    """What a replay did (this run; a resumed run counts from where it continued)."""

    read: int = 0
    predictions: int = 0
    dead_letters: int = 0
    copied: int = 0
    batches: int = 0


Send = tuple[str, bytes | None, bytes | None, Any, int | None, int | None]
# topic, key, value, headers, partition (None: by key), timestamp (None: now)


def resolve(
    consumer: Consumer,
    run: str,
    source: str,
    target: str,
    *,
    from_ms: int | None = None,
    to_ms: int | None = None,
    offsets: Sequence[Range] = (),
    model: str | None = None,
    dead_letters: str | None = None,
) -> tuple[ReplayPlan, list[str]]:
    """The plan: event times become offsets (``offsets_for_times``), ranges are cut to what the
    partitions hold. Returns it with a note per range cut.

    Raises:
        NotFound: the source topic does not exist.
        BrokerUnavailable: the broker did not answer.
    """
    if offsets:
        ranges, notes = clamp(offsets, watermarks(consumer, source))
    else:
        ranges = [r for r in ranges_since(consumer, source, from_ms, to_ms) if r.count]
        notes = []
    plan = ReplayPlan(
        run_id=run,
        source=source,
        ranges=tuple(ranges),
        target=target,
        model=model,
        dead_letters=dead_letters,
        window=(from_ms, to_ms),
    )
    return plan, notes


def ensure_targets(settings: Settings, specs: Sequence[TopicSpec]) -> dict[str, int]:
    """Create the missing output topics; the partition count of each.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    admin = AdminClient(admin_config(settings))
    existing = list_topic_partitions(admin, 10)
    ensure_topics(admin, [s for s in specs if s.name not in existing], 30)
    return list_topic_partitions(admin, 10)


def copier(target: str, partitions: int) -> Callable[[list[Message]], tuple[list[Send], Outcome]]:
    """Copies keep key, value, headers, timestamp and (when the target has it) partition."""

    def run(batch: list[Message]) -> tuple[list[Send], Outcome]:
        sends: list[Send] = []
        for m in batch:
            p = m.partition()
            ts_type, ts = m.timestamp()
            sends.append(
                (
                    target,
                    m.key(),
                    m.value(),
                    m.headers(),
                    p if p is not None and p < partitions else None,
                    ts if ts_type else None,
                )
            )
        return sends, Outcome(read=len(batch), copied=len(batch))

    return run


class _Waits:
    """Replay's side of the dependency gate: a re-score never degrades (defaults would not
    reproduce anything); it waits, with backoff, for up to ``patience`` seconds, then gives
    up with the error (the batch's transaction is aborted; running the same command again
    continues from it)."""

    def __init__(self, patience: float = DEPENDENCY_PATIENCE_SECONDS) -> None:
        self.patience = patience
        self._error: Exception | None = None
        self._since = 0.0

    def wait(self, seconds: float) -> None:
        if self._error is not None and time.monotonic() - self._since > self.patience:
            raise self._error
        time.sleep(seconds)

    def hold(self, dependency: str, error: Exception) -> None:
        logger.warning("replay waits up to %.0f s for %s: %s", self.patience, dependency, error)
        self._error, self._since = error, time.monotonic()

    def release(self) -> None:
        """Nothing was paused."""

    def abandoned(self) -> bool:
        return False


class Rescorer:
    """The worker's stages (envelope, decode, validate, enrich, score) over a replayed batch,
    with one model version and no rate limit; each event is validated against the time the
    broker stored it, so that the verdicts do not depend on when the replay runs."""

    def __init__(self, settings: Settings, plan: ReplayPlan, stages: Stages) -> None:
        if plan.model is None or plan.dead_letters is None:
            raise ConfigError("a re-score needs a model version and a dead-letter topic")
        self.stages = stages
        self.codec_out, self.codec_dlq = (
            codec_for(settings, by_record(settings.topics, r))
            for r in (settings.topics.prediction_record, "DeadLetter")
        )
        self.gate = DependencyGate("pause")
        self.target, self.dead_letters = plan.target, plan.dead_letters
        self.worker_id = f"replay-{plan.run_id}"
        self.max_letter = settings.batch.dead_letter_max_bytes

    def __call__(self, batch: list[Message]) -> tuple[list[Send], Outcome]:
        inbound = to_inbound(batch)
        stored = {(m.partition(), m.offset()): m.timestamp()[1] for m in batch}
        now_ms = int(time.time() * 1000)

        def at(messages: Sequence[Inbound]) -> npt.NDArray[np.int64]:
            return np.asarray([stored[(m.partition, m.offset)] for m in messages], dtype=np.int64)

        result = self.gate.run(self.stages, inbound, lambda: now_ms, _Waits(), validate_at=at)
        if result is None:  # _Waits never abandons a batch
            raise RuntimeError("the replay's batch was abandoned")
        account(result, shadow_published=False)
        sends: list[Send] = []
        served = result.served
        if served is not None:
            values = self.codec_out.encode_columns(served.columns(), len(served))
            sends += [
                (self.target, src.key, v, None, None, None)
                for src, v in zip(served.sources, values, strict=True)
            ]
        letters = encode_dead_letters(
            self.codec_dlq, result.dead_letters, self.worker_id, now_ms, self.max_letter
        )
        sends += [
            (self.dead_letters, dead_letter_key(d), v, dead_letter_headers(d), None, None)
            for d, v in zip(result.dead_letters, letters, strict=True)
        ]
        n = len(served) if served is not None else 0
        return sends, Outcome(read=len(batch), predictions=n, dead_letters=len(letters))


def fence(settings: Settings, run: str) -> Producer:
    """The replay's transactional producer. Starting it fences a run of the same replay that
    was killed and aborts the batch it had open; only then are the group's committed offsets
    final (until then the broker holds them as unstable), so call it before reading them.

    Raises:
        BrokerUnavailable: the broker did not answer.
    """
    producer = Producer(producer_config(settings, **{"transactional.id": group_of(run)}))
    try:
        producer.init_transactions(COMMIT_TIMEOUT_S)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot start the replay's transactions: {exc}") from exc
    return producer


def execute(
    plan: ReplayPlan,
    consumer: Consumer,
    producer: Producer,
    outputs: Callable[[list[Message]], tuple[list[Send], Outcome]],
    *,
    rate: float = 0.0,
    batch_size: int = 500,
    progress: Callable[[Outcome], None] = lambda _o: None,
) -> Outcome:
    """Run what is left of ``plan``, one transaction per batch; ``rate`` events/s at most
    (0: no limit). ``consumer`` belongs to the plan's group and ``producer`` comes from
    ``fence``; the caller closes the consumer.

    Raises:
        BrokerUnavailable: the broker did not take a batch (it was aborted: nothing of it is
            visible, and running the same replay again continues from it).
    """
    done = committed(consumer, plan.source, [r.partition for r in plan.ranges])
    todo = remaining(plan, done)
    total = Outcome()
    started = time.monotonic()
    size = max(1, min(batch_size, int(rate) if rate > 0 else batch_size))
    for batch in iter_ranges(consumer, plan.source, todo, max_batch=size):
        if rate > 0:  # pace: this batch may start once the events before it were due
            due = started + total.read / rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
        sends, outcome = outputs(batch)
        _commit(producer, consumer, plan, batch, sends)
        total.read += outcome.read
        total.predictions += outcome.predictions
        total.dead_letters += outcome.dead_letters
        total.copied += outcome.copied
        total.batches += 1
        progress(total)
    return total


def _commit(
    producer: Producer,
    consumer: Consumer,
    plan: ReplayPlan,
    batch: list[Message],
    sends: list[Send],
) -> None:
    producer.begin_transaction()
    try:
        for topic, key, value, headers, partition, ts in sends:
            kwargs: dict[str, Any] = {"key": key, "value": value}
            if headers:
                kwargs["headers"] = headers
            if partition is not None:
                kwargs["partition"] = partition
            if ts is not None:
                kwargs["timestamp"] = ts
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.send_offsets_to_transaction(
            next_offsets(batch), consumer.consumer_group_metadata(), COMMIT_TIMEOUT_S
        )
        # Flushes the batch first; a delivery that failed makes the commit fail (and abort).
        producer.commit_transaction(COMMIT_TIMEOUT_S)
    except BaseException as exc:  # an interrupt too: never leave a transaction open
        try:
            producer.abort_transaction(10)
        except KafkaException:
            logger.warning("replay %s: abort failed; the broker times it out", plan.run_id)
        if isinstance(exc, KafkaException):
            raise BrokerUnavailable(
                f"replay batch not committed ({exc}); nothing of it is visible; run the same "
                "command again to continue"
            ) from exc
        raise


def resolve_model(settings: Settings, model: str) -> str:
    """A version number from a version or an alias.

    Raises:
        NotFound: no such version or alias.
        RegistryUnavailable: the registry did not answer.
    """

    registry = MlflowRegistry(settings)
    if model.lstrip("v").isdigit():
        version = model.lstrip("v")
        if version not in registry.version_numbers():
            raise NotFound(f"model {settings.model.name} has no version {version}")
        return version
    aliased = registry.alias_version(model)
    if aliased is None:
        raise NotFound(f"model {settings.model.name} has no alias {model!r}")
    return aliased
