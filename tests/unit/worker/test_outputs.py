"""The worker's outputs with fake producers: a best-effort topic whose queue is full never
holds back predictions (they have a producer of their own)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from services.codec.factory import codec_for
from services.core import metrics
from services.core.records import Inbound
from services.core.settings import Settings
from services.kafka.tracker import DeliveryTracker
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.stages import Stages
from streams.topics import by_record, topic_table
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
