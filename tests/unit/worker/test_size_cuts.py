"""Under exactly_once a dead letter its topic refused for its size is not written again outside
the transaction: its size is noted, the transaction aborts, and the batch read again writes
every letter that large cut (reason kept, original dropped and marked) inside it."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from services.core.outcomes import Reason, Rejected, Stage
from services.core.records import TRUNCATED_MARK, DeadLetterOut, Inbound
from streams.worker.callbacks import LetterDelivery, SizeCuts
from tests.unit.dlq.test_letter import DLQ


def _letter(offset: int, size: int) -> DeadLetterOut:
    return DeadLetterOut(
        Inbound("t", 0, offset, b"k", b"x" * size, ()),
        Rejected(Stage.DECODE, Reason.BAD_MAGIC_BYTE, "first byte 0x78"),
    )


class Refused:
    """The delivery report's message: its value's length."""

    def __init__(self, size: int) -> None:
        self._size = size

    def len(self) -> int:
        return self._size

    def topic(self) -> str:
        return "t.dlq"


class FakeOutputs:
    def __init__(self, cuts: SizeCuts) -> None:
        self.cuts = cuts
        self.dlq_topic = type("Topic", (), {"name": "t.dlq"})()
        self.rescued: list[DeadLetterOut] = []

    def rescue_dead_letter(self, letter: DeadLetterOut) -> None:
        self.rescued.append(letter)  # the at-least-once path: must not run here


def test_a_refused_size_aborts_then_cuts_every_letter_that_large_inside_the_transaction() -> None:
    cuts = SizeCuts()
    outputs = FakeOutputs(cuts)
    big, small = _letter(1, 100_000), _letter(2, 100)
    first = cuts.encode(DLQ, [big, small], "w", 0, 1_000_000)
    acks: list[Any] = []
    LetterDelivery(outputs, big, lambda err, msg: acks.append(err))(  # type: ignore[arg-type]
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Refused(len(first[0]))
    )
    assert acks == [] and outputs.rescued == []  # no ack: the transaction aborts, nothing else
    assert cuts.pending and cuts.limit == len(first[0])

    other_big = _letter(3, 150_000)
    again = cuts.encode(DLQ, [big, small, other_big], "w", 0, 1_000_000)
    records = [DLQ.decode_one(v) for v in again]
    assert [r["original_value"] for r in records] == [None, b"x" * 100, None]  # type: ignore[index]
    assert records[0]["reason"] == "bad_magic_byte"  # type: ignore[index]
    assert f"{TRUNCATED_MARK}: original dropped to fit" in records[2]["detail"]  # type: ignore[index]

    # Refused even cut: the batch's failure (the worker stops, nothing committed).
    LetterDelivery(outputs, big, lambda err, msg: acks.append(err))(  # type: ignore[arg-type]
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), Refused(len(again[0]))
    )
    assert [e.code() for e in acks] == [KafkaError.MSG_SIZE_TOO_LARGE]
    cuts.committed()
    assert not cuts.pending
