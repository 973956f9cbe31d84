"""The worker's outputs with fake producers: a best-effort topic whose queue is full never
holds back predictions (they have a producer of their own); a dead letter refused for its size
is written again without its original, and when that fails too its chunk fails."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.codec.avro import AvroCodec
from services.codec.factory import codec_for
from services.core import metrics
from services.core.errors import PublishError
from services.core.records import Inbound
from services.core.settings import Settings
from services.kafka.denied import from_error
from services.kafka.tracker import DeliveryTracker
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.stages import Stages
from streams.topics import by_record, topic_table
from streams.worker.deliveries import check_deliveries
from streams.worker.outputs import Outputs
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.scoring.test_pipeline import CODEC, GOOD, NOW, RULES, SPEC, STORE


class Recording:
    """A producer that takes everything (the main one)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def produce(self, topic: str, value: bytes, key: Any = None, **_: Any) -> None:
        self.sent.append(topic)

    def poll(self, _timeout: float = 0) -> int:
        return 0


class Full(Recording):
    """A producer whose queue is full for good (its topic has no leader)."""

    def produce(self, topic: str, value: bytes, key: Any = None, **_: Any) -> None:
        raise BufferError("queue full")


def test_a_full_best_effort_queue_drops_shadow_scores_and_serving_goes_on(
    model: LoadedModel,  # noqa: F811
) -> None:
    settings = Settings()
    t = settings.topics
    table = {x.name: x for x in topic_table(t)}
    messages = [Inbound(t.events, 0, i, b"k", GOOD[i]) for i in range(20)]
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), messages, NOW)
    result = replace(result, shadowed=result.served)
    main, side = Recording(), Full()
    outputs = Outputs(
        main,  # type: ignore[arg-type]
        DeliveryTracker(),
        "w",
        predictions=(table[t.predictions], codec_for(settings, by_record(t, "Prediction"))),
        dead_letters=(by_record(t, "DeadLetter"), codec_for(settings, by_record(t, "DeadLetter"))),
        shadow=table[t.shadow_predictions],
        drift=None,
        side_producer=side,  # type: ignore[arg-type]
    )
    failed = metrics.PUBLISH_FAILURES.labels(topic=t.shadow_predictions)
    before = failed._value.get()
    started = time.monotonic()
    outputs.publish(messages, result, [], NOW)
    assert time.monotonic() - started < 5  # never waited on the full queue
    assert main.sent == [t.predictions] * 20
    assert failed._value.get() == before + 20


# -- a dead letter refused for its size: the rescue producer ------------------------------------


class Keeping:
    """A producer that keeps each message with its delivery callback (the main one); ``refuse``
    makes ``produce`` raise for dead letters, as the client does past message.max.bytes."""

    def __init__(self, refuse: KafkaError | None = None) -> None:
        self.sent: list[tuple[str, bytes, Any, Any]] = []
        self.refuse = refuse

    def produce(
        self, topic: str, value: bytes, key: Any = None, *, on_delivery: Any, **_: Any
    ) -> None:
        if self.refuse is not None and topic.endswith(".dlq"):
            raise KafkaException(self.refuse)
        self.sent.append((topic, value, key, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        return 0


class Rescue:
    """The rescue producer: ``flush`` reports ``answer`` for what it holds (or nothing, when
    ``silent``); ``raises`` makes ``produce`` itself fail."""

    def __init__(
        self,
        answer: KafkaError | None = None,
        *,
        silent: bool = False,
        raises: Exception | None = None,
    ) -> None:
        self.answer, self.silent, self.raises = answer, silent, raises
        self.sent: list[tuple[str, bytes, Any, Any]] = []
        self._pending: list[Any] = []

    def produce(
        self, topic: str, value: bytes, key: Any = None, *, on_delivery: Any, **kw: Any
    ) -> None:
        if self.raises is not None:
            raise self.raises
        self.sent.append((topic, value, key, kw.get("headers")))
        self._pending.append(on_delivery)

    def flush(self, _timeout: float = -1) -> int:
        pending, self._pending = self._pending, []
        if not self.silent:
            for callback in pending:
                callback(self.answer, None)
        return 0


def _letters_batch(
    model: LoadedModel,  # noqa: F811
    main: Keeping,
    rescue: Rescue,
) -> tuple[Outputs, DeliveryTracker, AvroCodec, str]:
    """One prediction and one dead letter (offsets 0 and 1 of partition 0), published."""
    settings = Settings()
    t = settings.topics
    table = {x.name: x for x in topic_table(t)}
    dlq = by_record(t, "DeadLetter")
    codec_dlq = codec_for(settings, dlq)
    messages = [Inbound(t.events, 0, 0, b"k", GOOD[0]), Inbound(t.events, 0, 1, b"k", b"garbage!")]
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), messages, NOW)
    assert (result.n_predictions, len(result.dead_letters)) == (1, 1)
    tracker = DeliveryTracker()
    outputs = Outputs(
        main,  # type: ignore[arg-type]
        tracker,
        "w",
        predictions=(table[t.predictions], codec_for(settings, by_record(t, "Prediction"))),
        dead_letters=(dlq, codec_dlq),
        shadow=None,
        drift=None,
        rescue_producer=lambda: rescue,  # type: ignore[arg-type,return-value]
    )
    outputs.publish(messages, result, [], NOW)
    return outputs, tracker, codec_dlq, t.events


def _deliver(main: Keeping, dead_letter_error: KafkaError | None) -> None:
    """Kafka's reports: the prediction is written; the dead letter gets ``dead_letter_error``."""
    for topic, _value, _key, callback in main.sent:
        callback(dead_letter_error if topic.endswith(".dlq") else None, None)


@pytest.mark.parametrize("where", ["delivery", "produce"])
def test_a_dead_letter_refused_for_its_size_is_written_again_without_the_original(
    model: LoadedModel,  # noqa: F811
    where: str,
) -> None:
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    main, rescue = Keeping(refuse=too_large if where == "produce" else None), Rescue()
    _outputs, tracker, codec_dlq, events = _letters_batch(model, main, rescue)
    _deliver(main, too_large)
    [(topic, value, key, headers)] = rescue.sent
    assert topic == by_record(Settings().topics, "DeadLetter").name and key is None
    record = codec_dlq.decode_one(value)
    assert isinstance(record, dict)
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        events,
        0,
        1,
    )
    assert record["original_value"] is None and record["original_key"] is None
    assert record["original_headers"] == [] and "original dropped" in record["detail"]
    assert (
        record["reason"] == "bad_magic_byte" and dict(headers)["error.reason"] == b"bad_magic_byte"
    )
    assert tracker.errors == [] and tracker.positions() == {(events, 0): 2}  # the chunk is done


@pytest.mark.parametrize(
    ("rescue", "expected"),
    [
        (Rescue(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), "MSG_SIZE_TOO_LARGE"),
        (Rescue(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)), "TOPIC_AUTHORIZATION_FAILED"),
        (Rescue(silent=True), "_MSG_TIMED_OUT"),
        (Rescue(raises=BufferError("queue full")), "_QUEUE_FULL"),
        (Rescue(raises=KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC))), "_UNKNOWN_TOPIC"),
    ],
    ids=["refused-too", "refused-other", "no-answer", "queue-full", "produce-raises"],
)
def test_when_the_rescue_fails_too_the_chunk_fails_and_is_never_committed(
    model: LoadedModel,  # noqa: F811
    rescue: Rescue,
    expected: str,
) -> None:
    main = Keeping()
    _outputs, tracker, _codec, events = _letters_batch(model, main, rescue)
    _deliver(main, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    [(tp, error)] = tracker.errors
    assert tp == (events, 0) and expected in error
    assert tracker.positions() == {} and tracker.in_flight() == 0  # stopped, uncommitted


def test_a_dead_letter_refused_for_anything_but_its_size_fails_its_chunk_with_no_rescue(
    model: LoadedModel,  # noqa: F811
) -> None:
    main, rescue = Keeping(), Rescue()
    _outputs, tracker, _codec, events = _letters_batch(model, main, rescue)
    _deliver(main, KafkaError(KafkaError._MSG_TIMED_OUT))
    assert rescue.sent == []
    [(tp, error)] = tracker.errors
    assert tp == (events, 0) and "_MSG_TIMED_OUT" in error
    assert tracker.positions() == {}


# -- a Write refused by the cluster: the line names the output topic ---------------------------


class Refusing(Keeping):
    """A producer whose client refuses every produce to ``topic`` outright, as librdkafka does
    once the broker answered TOPIC_AUTHORIZATION_FAILED for it (a revoked Write ACL)."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def produce(
        self, topic: str, value: bytes, key: Any = None, *, on_delivery: Any, **kw: Any
    ) -> None:
        if topic == self.topic:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
        super().produce(topic, value, key, on_delivery=on_delivery, **kw)


def test_a_write_refused_in_produce_names_the_predictions_topic_not_the_input(
    model: LoadedModel,  # noqa: F811
) -> None:
    """The stop line after a revoked Write on the predictions topic names that topic, the
    principal and Write (it named the input topic: the refusal came with no message)."""
    settings = Settings(kafka={"sasl_username": "streamscore-worker"})
    t = settings.topics
    main = Refusing(t.predictions)
    _outputs, tracker, _codec, events = _letters_batch(model, main, Rescue())
    assert tracker.failed_topics == [t.predictions]
    with pytest.raises(PublishError) as caught:
        check_deliveries(tracker)
    assert caught.value.topic == t.predictions and events != t.predictions
    line = from_error(settings, str(caught.value), caught.value.stage, caught.value.topic)
    assert str(line) == (
        f"streamscore-worker is not allowed to Write topic {t.predictions} "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )
