"""Exactly-once: one transaction per batch, an abort rewinds to the commit, a fence stops."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.core.errors import PublishError
from services.core.records import Inbound
from services.core.settings import Settings
from services.kafka.tracker import DeliveryTracker
from services.scoring.results import BatchResult
from streams.worker import transactional
from streams.worker.flow import TP, Flow
from streams.worker.transactional import (
    MAX_ABORTS_IN_A_ROW,
    Transactions,
    transactional_id,
)

TOPIC = "in.v1"


class FakeProducer:
    """Records the transaction calls in order; ``fail`` maps a call to the error it raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.offsets: list[dict[TP, int]] = []
        self.fail: dict[str, KafkaError] = {}

    def _call(self, name: str) -> None:
        self.calls.append(name)
        err = self.fail.get(name)
        if err is not None:
            raise KafkaException(err)

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], metadata: object, timeout: float = -1
    ) -> None:
        assert metadata == "group-metadata"
        self.offsets.append({(tp.topic, tp.partition): tp.offset for tp in positions})
        self._call("offsets")

    def commit_transaction(self, timeout: float = -1) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float = -1) -> None:
        self._call("abort")

    def poll(self, timeout: float = 0) -> int:
        return 0


class FakeConsumer:
    """The group's committed offsets, and the seeks made to them."""

    def __init__(self, committed: dict[int, int]) -> None:
        self.committed_at = committed
        self.seeks: dict[int, int] = {}

    def consumer_group_metadata(self) -> object:
        return "group-metadata"

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[Any]:
        return [
            TopicPartition(TOPIC, tp.partition, self.committed_at[tp.partition])
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks[tp.partition] = tp.offset

    def assignment(self) -> list[TopicPartition]:
        return []

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...


class FakeOutputs:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.cuts = None  # no dead letter refused for its size

    def publish(self, *_: Any) -> None:
        self.producer.calls.append("produce")


def _outputs(producer: FakeProducer) -> Any:
    """The worker's ``Outputs`` stand-in: producing is recorded as one call."""
    return FakeOutputs(producer)


def _batch() -> list[Inbound]:
    # partition 0: offsets 10..12; partition 1: offsets 40..41
    return [Inbound(TOPIC, 0, o, None, b"") for o in (10, 11, 12)] + [
        Inbound(TOPIC, 1, o, None, b"") for o in (40, 41)
    ]


def _txn(
    producer: FakeProducer, consumer: FakeConsumer, owned: set[TP] | None = None
) -> tuple[Transactions, DeliveryTracker]:
    tracker = DeliveryTracker()
    now = [0.0]  # the committed-offsets retries wait on a fake clock
    flow = Flow(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    txn = Transactions(
        producer,
        tracker,
        consumer=lambda: consumer,
        owned=lambda: {(TOPIC, 0), (TOPIC, 1)} if owned is None else owned,
        rewind=flow.restart_from_commit,
        name="streamscore-scoring-w1",
    )
    return txn, tracker


def test_a_batch_commits_its_outputs_and_offsets_in_one_transaction() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    txn, _ = _txn(producer, consumer)
    ok = txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)
    assert ok is True
    assert producer.calls == ["begin", "produce", "offsets", "commit"]
    assert producer.offsets == [{(TOPIC, 0): 13, (TOPIC, 1): 42}]
    assert consumer.seeks == {}


def test_deferred_messages_are_not_committed_in_the_transaction() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    txn, _ = _txn(producer, consumer)
    batch = _batch()
    txn.publish(
        _outputs(producer), batch, BatchResult(deferred=[batch[2], batch[3], batch[4]]), [], 0
    )
    assert producer.offsets == [{(TOPIC, 0): 12}]  # partition 1 wholly deferred: not moved


def test_an_abortable_error_aborts_and_rewinds_to_the_commit() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    producer.fail["commit"] = KafkaError(
        KafkaError.CONCURRENT_TRANSACTIONS, "abortable", txn_requires_abort=True
    )
    txn, tracker = _txn(producer, consumer, owned={(TOPIC, 0)})  # partition 1 revoked meanwhile
    tracker.open((TOPIC, 0), 10, 13, 3).ack(None)
    ok = txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)
    assert ok is False
    assert producer.calls == ["begin", "produce", "offsets", "commit", "abort"]
    assert consumer.seeks == {0: 10}  # back to the commit; the revoked partition left alone
    assert tracker.tracked() == []  # the abort's purge reports are not failures
    assert tracker.errors == []


class RefusingOutputs:
    """Outputs whose produce() is refused on the spot (a revoked Write): the error reaches the
    chunk's callback at once, and the message never enters the transaction."""

    def __init__(self, producer: FakeProducer, tracker: DeliveryTracker) -> None:
        self.producer, self.tracker = producer, tracker
        self.cuts = None

    def publish(self, inbound: list[Inbound], *_: Any) -> None:
        self.producer.calls.append("produce")
        chunk = self.tracker.open((TOPIC, 0), 10, 13, 3)
        chunk.ack(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "refused"))


def test_an_output_refused_on_the_spot_aborts_and_commits_no_offset() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    txn, tracker = _txn(producer, consumer)
    with pytest.raises(PublishError, match="not delivered"):
        txn.publish(RefusingOutputs(producer, tracker), _batch(), BatchResult(), [], 0)
    assert producer.calls == ["begin", "produce", "abort"]  # no offsets, no commit
    assert producer.offsets == []


def test_a_retriable_commit_error_is_retried_before_aborting() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    errors = [KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)]

    def commit(timeout: float = -1) -> None:
        producer.calls.append("commit")
        if errors:
            raise KafkaException(errors.pop())

    producer.commit_transaction = commit  # type: ignore[method-assign]  # fails once
    txn, _ = _txn(producer, consumer)
    assert txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0) is True
    assert producer.calls == ["begin", "produce", "offsets", "commit", "commit"]


def test_fenced_stops_the_worker_with_one_line() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    producer.fail["offsets"] = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    txn, _ = _txn(producer, consumer)
    with pytest.raises(PublishError) as raised:
        txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)
    assert str(raised.value) == (
        "fenced by a newer worker with transactional id streamscore-scoring-w1: this worker "
        "stops; its open batch is aborted (nothing of it is visible) and read again by the "
        "partitions' next owner [stage=transaction]"
    )
    assert "abort" not in producer.calls  # a fatal producer cannot abort; the broker does
    assert consumer.seeks == {}


def test_the_same_batch_aborted_again_and_again_stops_the_worker() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    producer.fail["commit"] = KafkaError(
        KafkaError._MSG_TIMED_OUT, "undeliverable", txn_requires_abort=True
    )
    txn, _ = _txn(producer, consumer)
    for _ in range(MAX_ABORTS_IN_A_ROW - 1):
        assert txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0) is False
    with pytest.raises(PublishError, match="5 transactions aborted in a row"):
        txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)


def test_transactional_id_is_stable_per_instance() -> None:
    assert transactional_id(Settings(), "pod-0") == "streamscore-scoring-pod-0"
    named = Settings(worker={"transactional_id": "scoring-eu-1"})
    assert transactional_id(named, "pod-0") == "scoring-eu-1"


def test_a_retriable_abort_is_retried_and_a_failed_rewind_stops_the_worker() -> None:
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    producer.fail["commit"] = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    aborts = [KafkaError(KafkaError._TIMED_OUT, "coordinator away", retriable=True)]

    def abort(timeout: float = -1) -> None:
        producer.calls.append("abort")
        if aborts:
            raise KafkaException(aborts.pop())

    def committed(partitions: list[TopicPartition], timeout: float = -1) -> list[Any]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))

    producer.abort_transaction = abort  # type: ignore[method-assign]  # fails once
    consumer.committed = committed  # type: ignore[method-assign]  # the group cannot answer
    txn, _ = _txn(producer, consumer)
    with pytest.raises(PublishError, match="could not be put back to their commit"):
        txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)
    assert producer.calls == ["begin", "produce", "offsets", "commit", "abort", "abort"]


def test_a_call_the_client_never_returns_from_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's send_offsets_to_transaction can wait for ever on a group coordinator it
    cached before a broker restart: the worker stops with one line instead of hanging, and
    beats liveness while it waits."""
    monkeypatch.setattr(transactional, "HUNG_SECONDS", 2.0)
    producer, consumer = FakeProducer(), FakeConsumer({0: 10, 1: 40})
    release = threading.Event()

    def stuck(positions: list[TopicPartition], metadata: object, timeout: float = -1) -> None:
        release.wait(30)

    producer.send_offsets_to_transaction = stuck  # type: ignore[method-assign]  # never returns
    beats: list[int] = []
    txn = Transactions(
        producer,
        DeliveryTracker(),
        consumer=lambda: consumer,
        owned=lambda: set(),
        rewind=Flow().restart_from_commit,
        name="streamscore-scoring-w1",
        beat=lambda: beats.append(1),
    )
    try:
        with pytest.raises(PublishError, match="did not return from the transaction's offsets"):
            txn.publish(_outputs(producer), _batch(), BatchResult(), [], 0)
        # The stuck call's thread must not keep the stopped process alive at exit.
        stuck_threads = [t for t in threading.enumerate() if t.name == "kafka-txn"]
        assert stuck_threads and all(t.daemon for t in stuck_threads)
    finally:
        release.set()
    assert len(beats) >= 2
