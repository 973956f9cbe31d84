"""The worker's pauses against a fake consumer that keeps librdkafka's rule: an application's
pause outlives a revoke and a later assignment, and only ``resume()`` clears it. Random
schedules of assignment, revoke, loss, holds, backpressure and time check that the worker's
record and the client's agree, and that no owned partition stays paused without a reason."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import BrokerUnavailable
from services.core.records import Inbound
from streams.worker.flow import COMMITTED_RETRY_SECONDS, Flow

TOPIC = "t"


class FakeConsumer:
    """Assignment, pauses and positions, as librdkafka keeps them."""

    def __init__(self) -> None:
        self.assigned: set[int] = set()
        self.paused: set[int] = set()  # survives revoke and assign, as in librdkafka
        self.positions: dict[int, int] = {}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        assert partition.partition in self.assigned, "seek on a partition not assigned"
        self.positions[partition.partition] = partition.offset

    # what the membership's rebalance callbacks do around the client's own (in)assignment
    def assign(self, flow: Flow, partitions: list[int]) -> None:
        flow.assigned(self, [TopicPartition(TOPIC, p) for p in partitions])
        self.assigned |= set(partitions)

    def revoke(self, flow: Flow, partitions: list[int]) -> None:
        flow.forget(self, [(TOPIC, p) for p in partitions])
        self.assigned -= set(partitions)


def _msgs(partition: int, offsets: range) -> list[Inbound]:
    return [Inbound(TOPIC, partition, o, None, b"") for o in offsets]


def test_a_partition_paused_by_backpressure_comes_back_unpaused_after_a_revoke() -> None:
    consumer, flow = FakeConsumer(), Flow()
    consumer.assign(flow, [0, 1])
    flow.hold_back(consumer, _msgs(0, range(5, 8)), until=100.0)
    assert consumer.paused == {0} and consumer.positions[0] == 5
    consumer.revoke(flow, [0])
    consumer.assign(flow, [0])  # P comes back to this worker later
    assert consumer.paused == set() and flow.paused == {}


def test_a_partition_assigned_during_a_hold_is_held_and_released_with_the_rest() -> None:
    consumer, flow = FakeConsumer(), Flow()
    consumer.assign(flow, [0])
    flow.hold_back(consumer, _msgs(0, range(3, 4)), until=100.0)
    flow.hold(consumer, now=0.0)
    consumer.assign(flow, [1, 2])
    assert consumer.paused == {0, 1, 2}
    flow.release(consumer)
    assert consumer.paused == {0}  # backpressure keeps its own pause until due
    flow.resume_due(consumer, now=100.0)
    assert consumer.paused == set()


def test_a_pause_past_its_time_is_overdue_for_the_probe() -> None:
    consumer, flow = FakeConsumer(), Flow()
    consumer.assign(flow, [0])
    flow.hold_back(consumer, _msgs(0, range(1)), until=10.0)
    owned = {(TOPIC, 0)}
    assert flow.overdue(now=20.0, grace=30.0, owned=owned) == []
    assert flow.overdue(now=50.0, grace=30.0, owned=owned) == [(TOPIC, 0)]
    flow.resume_due(consumer, now=50.0)
    flow.hold(consumer, now=60.0)  # a dependency down: held, decided, for a while
    assert flow.overdue(now=80.0, grace=30.0, owned=owned) == []
    assert flow.overdue(now=100.0, grace=30.0, owned=owned) == [(TOPIC, 0)]


def test_rewind_seeks_only_partitions_kept_throughout() -> None:
    consumer, flow = FakeConsumer(), Flow()
    consumer.assign(flow, [0, 1])
    flow.rewind(consumer, _msgs(0, range(7, 9)) + _msgs(1, range(2, 3)), kept={(TOPIC, 0)})
    assert consumer.positions == {0: 7}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.sets(st.integers(0, 3), min_size=1)),
        st.tuples(st.just("revoke"), st.sets(st.integers(0, 3), min_size=1)),
        st.tuples(st.just("defer"), st.integers(0, 3)),
        st.tuples(st.just("hold"), st.none()),
        st.tuples(st.just("release"), st.none()),
        st.tuples(st.just("tick"), st.integers(1, 20)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_worker_and_the_client_agree_on_every_pause(schedule: list[tuple[str, Any]]) -> None:
    consumer, flow = FakeConsumer(), Flow()
    now = 0.0
    for op, arg in schedule:
        if op == "assign":
            new = sorted(arg - consumer.assigned)
            consumer.assign(flow, new)
        elif op == "revoke":
            consumer.revoke(flow, sorted(arg & consumer.assigned))
        elif op == "defer" and arg in consumer.assigned and not flow.holding:
            flow.hold_back(consumer, _msgs(arg, range(10, 12)), until=now + 5)
        elif op == "hold" and not flow.holding:
            flow.hold(consumer, now)
        elif op == "release" and flow.holding:
            flow.release(consumer)
        elif op == "tick":
            now += arg
            flow.resume_due(consumer, now)
        # The invariant: an owned partition is paused exactly when the worker says why.
        owned = consumer.assigned
        reasons = owned if flow.holding else {p for (_, p) in flow.paused}
        assert consumer.paused & owned == reasons, (op, arg)
        assert {p for (_, p) in flow.paused} <= owned
    # With the hold over and time past every due, nothing owned is paused.
    if flow.holding:
        flow.release(consumer)
    flow.resume_due(consumer, now + 1000)
    assert consumer.paused & consumer.assigned == set()


class _CoordinatorMoving(FakeConsumer):
    """``committed()`` fails with coordinator errors (a broker restarted) ``failures`` times."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_COORDINATOR) -> None:
        super().__init__()
        self.failures, self.code, self.asked = failures, code, 0

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[Any]:
        self.asked += 1
        if self.asked <= self.failures:
            raise KafkaException(KafkaError(self.code, "coordinator moving"))
        return [TopicPartition(tp.topic, tp.partition, 40) for tp in partitions]


class _Clock:
    def __init__(self) -> None:
        self.now, self.beats = 0.0, 0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def beat(self) -> None:
        self.beats += 1


def test_restart_from_commit_retries_the_coordinator_errors_of_a_broker_restart() -> None:
    clock = _Clock()
    flow = Flow(beat=clock.beat, clock=lambda: clock.now, sleep=clock.sleep)
    for code in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
        consumer = _CoordinatorMoving(failures=5, code=code)
        consumer.assigned = {0}
        flow.restart_from_commit(consumer, {(TOPIC, 0)})
        assert consumer.positions == {0: 40} and consumer.asked == 6
    assert clock.beats >= 12  # liveness beat on every attempt


def test_restart_from_commit_stops_with_one_line_after_its_bound() -> None:
    clock = _Clock()
    flow = Flow(beat=clock.beat, clock=lambda: clock.now, sleep=clock.sleep)
    consumer = _CoordinatorMoving(failures=10**6, code=KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    consumer.assigned = {0}
    with pytest.raises(BrokerUnavailable, match="committed offsets could not be read"):
        flow.restart_from_commit(consumer, {(TOPIC, 0)})
    assert COMMITTED_RETRY_SECONDS <= clock.now < COMMITTED_RETRY_SECONDS + 3
    assert consumer.positions == {}


def test_restart_from_commit_does_not_retry_what_retrying_cannot_heal() -> None:
    consumer = _CoordinatorMoving(failures=1, code=KafkaError.GROUP_AUTHORIZATION_FAILED)
    consumer.assigned = {0}
    with pytest.raises(KafkaException):
        Flow(sleep=lambda _s: None).restart_from_commit(consumer, {(TOPIC, 0)})
    assert consumer.asked == 1
