"""The worker's membership failure branches with a fake consumer and producer (no broker): a
revoke whose commit fails, a revoke whose outputs are still in flight when its wait runs out,
an asynchronous commit refused for one partition, lost partitions, and the callbacks of a
consumer that was replaced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.core.settings import Settings
from services.kafka.tracker import Chunk, DeliveryTracker
from streams.worker import membership
from streams.worker.flow import TP, Flow
from streams.worker.membership import Membership
from streams.worker.summary import WorkerSummary

TOPIC = "feed.interactions.v1"


class FakeConsumer:
    """Records commits (``fail`` makes them raise, as librdkafka does for a synchronous one),
    pauses and resumes."""

    def __init__(self) -> None:
        self.commits: list[tuple[dict[TP, int], bool]] = []
        self.fail: KafkaException | None = None
        self.paused: set[TP] = set()
        self.subscribed: list[str] = []
        self.closed = False

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        if self.fail is not None:
            raise self.fail
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))

    def subscribe(self, topics: list[str], **_: Any) -> None:
        self.subscribed = list(topics)

    def assignment(self) -> list[TopicPartition]:
        return []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """``flush`` runs ``on_flush`` (the delivery reports it would serve) and counts calls."""

    def __init__(self, on_flush: Any = None) -> None:
        self.flushes = 0
        self.on_flush = on_flush

    def flush(self, timeout: float = -1) -> int:
        self.flushes += 1
        if self.on_flush is not None:
            self.on_flush(self.flushes)
        return 0


@dataclass
class PartitionResult:
    """A commit result for one partition (confluent-kafka's ``TopicPartition.error`` is
    read-only, so a real one cannot carry an error in a unit test)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


@pytest.fixture
def consumers(monkeypatch: pytest.MonkeyPatch) -> list[FakeConsumer]:
    """Every consumer the membership builds, in order (no librdkafka client at all)."""
    made: list[FakeConsumer] = []

    def build(_config: Any) -> FakeConsumer:
        made.append(FakeConsumer())
        return made[-1]

    monkeypatch.setattr(membership, "Consumer", build)
    return made


def _membership(producer: FakeProducer | None = None) -> Membership:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # never used: the consumer is a fake
        metrics={"enabled": False},
        drift={"enabled": False},
    )
    return Membership(
        settings,
        TOPIC,
        tracker=DeliveryTracker(clock=lambda: 0.0),
        producer=producer or FakeProducer(),  # type: ignore[arg-type]
        flow=Flow(),
        summary=WorkerSummary(),
        acknowledged=lambda chunk: None,
    )


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, p) for p in partitions]


def _acked(m: Membership, partition: int, first: int, end: int) -> Chunk:
    """A chunk of ``partition`` whose every output Kafka acknowledged."""
    chunk = m.tracker.open((TOPIC, partition), first, end, outputs=end - first)
    for _ in range(end - first):
        chunk.ack(None)
    return chunk


def _spy_uncommit(m: Membership, monkeypatch: pytest.MonkeyPatch) -> list[list[TP]]:
    calls: list[list[TP]] = []
    real = m.tracker.uncommit

    def uncommit(positions: Any) -> None:
        calls.append(list(positions))
        real(positions)

    monkeypatch.setattr(m.tracker, "uncommit", uncommit)
    return calls


# -- a revoke whose synchronous commit fails ---------------------------------------------------


@pytest.mark.parametrize(
    "code", [KafkaError.ILLEGAL_GENERATION, KafkaError._TRANSPORT], ids=["fenced", "transport"]
)
def test_a_revoke_whose_commit_fails_counts_it_uncommits_and_raises_nothing(
    consumers: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    m = _membership()
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    _acked(m, 0, 0, 5)
    uncommitted = _spy_uncommit(m, monkeypatch)
    consumer.fail = KafkaException(KafkaError(code))
    m._on_revoke(consumer, _tps(0))  # type: ignore[arg-type]  # must not raise out of poll()
    assert (m.summary.commit_failures, m.summary.commits) == (1, 0)
    assert uncommitted == [[(TOPIC, 0)]]
    assert consumer.commits == []
    assert m.owned() == {(TOPIC, 1)} and m.tracker.tracked() == [] and m.revokes == 1


def test_a_failed_synchronous_commit_is_handed_out_again(
    consumers: list[FakeConsumer],
) -> None:
    m = _membership()
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0))  # type: ignore[arg-type]
    _acked(m, 0, 0, 5)
    consumer.fail = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    m.commit(sync=True)
    consumer.fail = None
    m.commit(sync=True)  # the position the failed commit carried comes back
    assert consumer.commits == [({(TOPIC, 0): 5}, False)]
    assert (m.summary.commit_failures, m.summary.commits) == (1, 1)


# -- a revoke's bounded wait for its outputs ---------------------------------------------------


def test_a_revoke_waits_for_outputs_in_flight_and_commits_them(
    consumers: list[FakeConsumer],
) -> None:
    chunks: list[Chunk] = []

    def deliveries(_n: int) -> None:
        for _ in range(2):
            chunks[0].ack(None)

    producer = FakeProducer(on_flush=deliveries)
    m = _membership(producer)
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0))  # type: ignore[arg-type]
    chunks.append(m.tracker.open((TOPIC, 0), 0, 2, outputs=2))
    m._on_revoke(consumer, _tps(0))  # type: ignore[arg-type]
    assert producer.flushes == 1  # waited, and no longer than the outputs took
    assert consumer.commits == [({(TOPIC, 0): 2}, False)]


@pytest.mark.timeout(20)
def test_a_revoke_whose_outputs_are_still_in_flight_commits_only_what_was_acknowledged(
    consumers: list[FakeConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(membership, "REVOKE_FLUSH_SECONDS", 0.05)
    chunks: dict[str, Chunk] = {}

    def deliveries(n: int) -> None:
        if n == 1:  # the first flush serves chunk a's two reports; b's three never come
            chunks["a"].ack(None)
            chunks["a"].ack(None)

    producer = FakeProducer(on_flush=deliveries)
    m = _membership(producer)
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    chunks["a"] = m.tracker.open((TOPIC, 0), 0, 5, outputs=2)
    chunks["b"] = m.tracker.open((TOPIC, 0), 5, 8, outputs=3)
    _acked(m, 1, 0, 4)  # partition 1 stays ours: not committed by partition 0's revoke
    m._on_revoke(consumer, _tps(0))  # type: ignore[arg-type]
    assert producer.flushes > 1  # it kept waiting while b was in flight, then gave up
    assert consumer.commits == [({(TOPIC, 0): 5}, False)]  # a, not b
    assert chunks["b"].detached  # b's late reports change nothing
    assert m.tracker.tracked() == [(TOPIC, 1)] and m.owned() == {(TOPIC, 1)}


# -- asynchronous commit results ---------------------------------------------------------------


def test_a_commit_refused_for_one_partition_uncommits_that_partition_only(
    consumers: list[FakeConsumer],
) -> None:
    m = _membership()
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    _acked(m, 0, 0, 3)
    _acked(m, 1, 0, 4)
    m.commit(sync=False)
    assert consumer.commits == [({(TOPIC, 0): 3, (TOPIC, 1): 4}, True)]
    results: list[Any] = [
        PartitionResult(TOPIC, 0, 3, KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)),
        PartitionResult(TOPIC, 1, 4),
    ]
    m._on_commit(None, results)
    assert m.summary.commit_failures == 1
    m.commit(sync=False)
    assert consumer.commits[1:] == [({(TOPIC, 0): 3}, True)]  # partition 1 was committed


def test_a_refused_commit_request_uncommits_every_partition_and_no_offset_is_no_failure(
    consumers: list[FakeConsumer],
) -> None:
    m = _membership()
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    _acked(m, 0, 0, 3)
    _acked(m, 1, 0, 4)
    m.commit(sync=False)
    results: list[Any] = [PartitionResult(TOPIC, 0, 3), PartitionResult(TOPIC, 1, 4)]
    m._on_commit(KafkaError(KafkaError._NO_OFFSET), results)
    assert m.summary.commit_failures == 0
    m._on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), results)
    assert m.summary.commit_failures == 1
    m.commit(sync=False)
    assert consumer.commits[1:] == [({(TOPIC, 0): 3, (TOPIC, 1): 4}, True)]


# -- lost partitions ---------------------------------------------------------------------------


def test_lost_partitions_are_forgotten_resumed_and_never_committed(
    consumers: list[FakeConsumer],
) -> None:
    m = _membership()
    consumer = consumers[0]
    m._on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    done = _acked(m, 0, 0, 5)  # acknowledged, but the group has moved on: not ours to commit
    waiting = m.tracker.open((TOPIC, 0), 5, 7, outputs=2)
    consumer.pause(_tps(0))  # backpressure had paused it
    m.flow.paused = {(TOPIC, 0): 1e12}
    m._on_lost(consumer, _tps(0))  # type: ignore[arg-type]
    assert consumer.commits == [] and m.summary.commits == 0
    assert m.owned() == {(TOPIC, 1)} and m.tracker.tracked() == []
    assert done.detached and waiting.detached  # late reports change nothing
    assert m.flow.paused == {} and consumer.paused == set()
    assert m.lost_at is not None and m.revokes == 1
    m.commit(sync=True)  # nothing of partition 0 is left to commit later either
    assert consumer.commits == []


# -- a replaced consumer -----------------------------------------------------------------------


def test_the_callbacks_of_a_replaced_consumer_are_ignored(
    consumers: list[FakeConsumer],
) -> None:
    m = _membership()
    old = consumers[0]
    m.subscribe()
    m._on_assign(old, _tps(0))  # type: ignore[arg-type]
    m._on_lost(old, _tps(0))  # type: ignore[arg-type]
    assert m.lost_at is not None
    m.rejoin_if_stuck(m.lost_at + membership.REJOIN_SECONDS + 1)
    assert len(consumers) == 2
    new = consumers[1]
    assert m.consumer is new  # type: ignore[comparison-overlap]
    assert new.subscribed == [TOPIC]
    m._on_assign(new, _tps(2))  # type: ignore[arg-type]
    _acked(m, 2, 0, 3)
    before = (m.revokes, m.summary.rebalances, m.lost_at)
    # The old consumer, closing on its own thread, still serves its callbacks.
    m._on_assign(old, _tps(0, 1))  # type: ignore[arg-type]
    m._on_revoke(old, _tps(2))  # type: ignore[arg-type]
    m._on_lost(old, _tps(2))  # type: ignore[arg-type]
    assert (m.revokes, m.summary.rebalances, m.lost_at) == before
    assert m.owned() == {(TOPIC, 2)} and m.tracker.tracked() == [(TOPIC, 2)]
    assert old.commits == [] and new.commits == []
    m._on_revoke(new, _tps(2))  # type: ignore[arg-type]  # the current one's are served
    assert new.commits == [({(TOPIC, 2): 3}, False)] and m.owned() == set()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_exactly_once_commits_no_offsets_outside_its_transactions(
    consumers: list[FakeConsumer], guarantee: str
) -> None:
    """Under exactly_once the offsets go into each batch's transaction: the membership's own
    commits (periodic, on revoke, at shutdown) send nothing, and still count what is done."""
    base = _membership()
    settings = base.settings.model_copy(
        update={
            "worker": base.settings.worker.model_copy(update={"processing_guarantee": guarantee})
        }
    )
    m = Membership(
        settings,
        TOPIC,
        tracker=DeliveryTracker(clock=lambda: 0.0),
        producer=FakeProducer(),  # type: ignore[arg-type]
        flow=Flow(),
        summary=WorkerSummary(),
        acknowledged=lambda chunk: None,
    )
    m.tracker.open((TOPIC, 0), 0, 2, 1).ack(None)
    m.commit(sync=True)
    expected = [] if guarantee == "exactly_once" else [({(TOPIC, 0): 2}, False)]
    assert consumers[-1].commits == expected
    assert m.tracker.positions() == {}  # handed out either way: not sent again
