"""The worker's batch handling with a fake consumer (no broker): a rebalance served while a
batch is taken drops it and rewinds only the partitions owned throughout; a stop lets the batch
in hand be published; a hold pauses everything and a revoke during it abandons the batch."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from services.codec.factory import codec_for
from services.core.errors import BrokerUnavailable, FeatureStoreUnavailable, PublishError
from services.core.settings import Settings
from services.scoring import gate
from services.scoring.model import LoadedModel
from services.scoring.stages import Stages
from streams.topics import by_record, topic_table
from streams.worker import ScoringWorker, WorkerTopics
from streams.worker.deliveries import check_deliveries
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.scoring.test_pipeline import CODEC, GOOD, NOW, RULES, SPEC, STORE

TOPIC = "feed.interactions.v1"


class FakeConsumer:
    """Serves scripted batches; runs the membership's rebalance callbacks inside ``consume``,
    where librdkafka serves them; records pauses and seeks."""

    def __init__(self, worker: ScoringWorker) -> None:
        self.worker = worker
        self.batches: list[list[Message]] = []
        self.during: list[Any] = []  # a callback per consume call, run before it returns
        self.paused: set[int] = set()
        self.seeks: dict[int, int] = {}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.during:
            self.during.pop(0)()
        return self.batches.pop(0) if self.batches else []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.worker.membership.owned())]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks[tp.partition] = tp.offset

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        return None

    def committed(self, tps: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 2) for tp in tps]  # the group's commit


def _worker(
    loaded: LoadedModel, lookup: Any = STORE.get_many
) -> tuple[ScoringWorker, FakeConsumer]:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # nothing listens: no broker is used
        metrics={"enabled": False},
        drift={"enabled": False},
    )
    t = settings.topics
    table = {x.name: x for x in topic_table(t)}
    codec_out = codec_for(settings, by_record(t, "Prediction"))
    codec_dlq = codec_for(settings, by_record(t, "DeadLetter"))
    worker = ScoringWorker(
        settings,
        topics=WorkerTopics(table[t.events], table[t.predictions], by_record(t, "DeadLetter")),
        stages=Stages.of(CODEC, RULES, SPEC, lookup, loaded),
        prediction_codec=codec_out,
        dead_letter_codec=codec_dlq,
        clock_ms=lambda: NOW,
    )
    fake = FakeConsumer(worker)
    worker.membership.consumer = fake  # type: ignore[assignment]
    return worker, fake


def _messages(partition: int, first: int, n: int) -> list[Message]:
    return [
        Message(topic=TOPIC, partition=partition, offset=first + i, key=b"k", value=GOOD[i])
        for i in range(n)
    ]


def _assign(worker: ScoringWorker, fake: FakeConsumer, *partitions: int) -> None:
    worker.membership._on_assign(fake, [TopicPartition(TOPIC, p) for p in partitions])  # type: ignore[arg-type]


def _revoke(worker: ScoringWorker, fake: FakeConsumer, *partitions: int) -> None:
    worker.membership._on_revoke(fake, [TopicPartition(TOPIC, p) for p in partitions])  # type: ignore[arg-type]


def _take_and_handle(worker: ScoringWorker) -> None:
    revokes, epochs = worker.membership.revokes, worker.membership.epochs()
    batch = worker.membership.take(100, 0.01)
    worker._handle(batch, revokes, epochs)


def test_a_revoke_while_the_batch_is_taken_drops_it_and_rewinds_what_stayed(
    model: LoadedModel,  # noqa: F811
) -> None:
    worker, fake = _worker(model)
    _assign(worker, fake, 0, 1)
    fake.batches = [_messages(0, 5, 3) + _messages(1, 7, 3)]
    fake.during = [lambda: _revoke(worker, fake, 1)]
    _take_and_handle(worker)
    assert worker.summary.consumed == 0 and worker.tracker.in_flight() == 0  # nothing written
    assert fake.seeks == {0: 5}  # partition 1 is not ours: its next owner reads it


def test_a_partition_revoked_and_assigned_again_goes_back_to_its_commit(
    model: LoadedModel,  # noqa: F811
) -> None:
    worker, fake = _worker(model)
    _assign(worker, fake, 0, 1)
    fake.batches = [_messages(0, 5, 3) + _messages(1, 7, 3)]
    fake.during = [lambda: (_revoke(worker, fake, 1), _assign(worker, fake, 1))]
    _take_and_handle(worker)
    # Partition 1 goes back to its commit (2): seeking it to the batch's 7 would skip 2-6.
    assert fake.seeks == {0: 5, 1: 2}


def test_a_stop_lets_the_batch_in_hand_be_published(model: LoadedModel) -> None:  # noqa: F811
    worker, fake = _worker(model)
    _assign(worker, fake, 0)
    fake.batches = [_messages(0, 0, 4)]
    fake.during = [worker.request_stop]
    _take_and_handle(worker)
    assert worker.summary.predictions == 4 and fake.seeks == {}


def test_a_hold_pauses_all_and_a_revoke_during_it_abandons_the_batch(
    model: LoadedModel,  # noqa: F811
) -> None:
    calls = {"n": 0}

    def down(requests: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 8:  # while held: the group takes partition 1 away
            _revoke(worker, fake, 1)
        raise FeatureStoreUnavailable("redis down")

    worker, fake = _worker(model, down)
    _assign(worker, fake, 0, 1)
    fake.batches = [_messages(0, 5, 2) + _messages(1, 9, 2)]
    with pytest.MonkeyPatch.context() as mp:  # the gate's real waits, made short
        mp.setattr(gate, "FIRST_BACKOFF_SECONDS", 0.001)
        mp.setattr(gate, "MAX_BACKOFF_SECONDS", 0.002)
        _take_and_handle(worker)
    assert not worker.flow.holding and fake.paused == set()  # the hold was released
    assert worker.summary.consumed == 0 and fake.seeks == {0: 5}


def test_a_failed_output_stops_the_worker_and_nothing_passes_it(
    model: LoadedModel,  # noqa: F811
) -> None:
    """A prediction Kafka refused (after its own retries): the worker stops with PublishError
    naming where, and no commit position passes the input it was for."""
    worker, fake = _worker(model)
    _assign(worker, fake, 0)
    done = worker.tracker.open((TOPIC, 0), 0, 2, 2)  # offsets 0-1: both acknowledged
    done.ack(None)
    done.ack(None)
    failed = worker.tracker.open((TOPIC, 0), 2, 4, 2)  # offsets 2-3: one output refused
    failed.ack(None)
    failed.ack("MSG_TIMED_OUT")
    with pytest.raises(PublishError) as raised:
        check_deliveries(worker.tracker)
    assert raised.value.topic == TOPIC and raised.value.partition == 0
    assert worker.tracker.positions() == {(TOPIC, 0): 2}  # never past offset 2


def test_a_partition_lost_and_assigned_again_in_the_take_goes_back_to_its_commit(
    model: LoadedModel,  # noqa: F811
) -> None:
    """The take's consume serves a lost and a new assignment of partition 1, and returns
    messages the new assignment already fetched. The batch is dropped; partition 1 must go
    back to the group's commit, or its messages would be skipped for good (the explorer found
    200 events lost this way)."""
    worker, fake = _worker(model)
    _assign(worker, fake, 0, 1)
    # The commit (35) lies below the batch's first message (40): rewinding to the batch, as
    # if the partition had been owned without a break, would skip 35-39.
    fake.committed = lambda tps, timeout=None: [  # type: ignore[method-assign]
        TopicPartition(tp.topic, tp.partition, 35) for tp in tps
    ]
    lost = [TopicPartition(TOPIC, 1)]
    fake.batches = [_messages(0, 5, 3) + _messages(1, 40, 3)]
    fake.during = [
        lambda: (
            worker.membership._on_lost(fake, lost),  # type: ignore[arg-type]
            _assign(worker, fake, 1),
        )
    ]
    _take_and_handle(worker)
    assert worker.summary.consumed == 0
    assert fake.seeks == {0: 5, 1: 35}


def test_a_refused_output_is_named_by_the_topic_it_was_for(
    model: LoadedModel,  # noqa: F811
) -> None:
    """A dead letter the broker refused (its topic was deleted): the PublishError names the
    dead-letter topic, not the input partition the letter came from."""

    class Report:
        def topic(self) -> str:
            return f"{TOPIC}.dlq"

    worker, _ = _worker(model)
    chunk = worker.tracker.open((TOPIC, 3), 10, 11, 1)
    chunk.ack("UNKNOWN_TOPIC_OR_PART", Report())
    with pytest.raises(PublishError) as raised:
        check_deliveries(worker.tracker)
    assert raised.value.topic == f"{TOPIC}.dlq" and f"{TOPIC}.dlq" in str(raised.value)
    assert raised.value.partition == 3


def test_back_to_the_commit_when_the_commit_cannot_be_read_stops_the_worker(
    model: LoadedModel,  # noqa: F811
) -> None:
    """Going back to the commit needs the group's committed offsets. If the broker does not
    give them within the retry bound, the worker stops (nothing of the batch was written or
    committed); a partition whose fetch has not started yet (_STATE on seek) is left to start
    at the commit itself."""
    from confluent_kafka import KafkaError, KafkaException

    worker, fake = _worker(model)
    _assign(worker, fake, 0, 1)

    def state(tp: TopicPartition) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE))

    fake.seek = state  # type: ignore[method-assign]
    worker.flow.restart_from_commit(fake, {(TOPIC, 1)})  # tolerated: no error
    fake.batches = [_messages(1, 40, 3)]
    fake.during = [lambda: (_revoke(worker, fake, 1), _assign(worker, fake, 1))]

    def unreadable(tps: Any, timeout: float = -1) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    fake.committed = unreadable  # type: ignore[method-assign]
    # Retried (the coordinator may be loading after a broker restart) for its bound, on a
    # fake clock, then one decided line.
    now = [0.0]
    worker.flow.clock = lambda: now[0]
    worker.flow.sleep = lambda s: now.__setitem__(0, now[0] + s)
    with pytest.raises(BrokerUnavailable, match="committed offsets could not be read"):
        _take_and_handle(worker)
    assert worker.summary.consumed == 0 and worker.tracker.in_flight() == 0
