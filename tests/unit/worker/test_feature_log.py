"""The feature log: what the worker writes per batch, and training on it bit for bit."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from services.codec.factory import codec_for
from services.core import metrics
from services.core.records import Inbound
from services.core.settings import Settings
from services.features.assemble import assemble, lookup_requests
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.kafka.tracker import DeliveryTracker
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.stages import Stages
from services.synthetic.world import World, strip_private
from services.training.dataset import build_training_set
from streams.topics import by_record
from streams.worker.outputs import Outputs
from streams.worker.parts import FeatureLogOutput
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.scoring.test_pipeline import BAD, CODEC, RULES

SPEC = FeatureSpec.load()
WORLD = World(SPEC, n_users=30, n_items=20, seed=5)
NOW = WORLD.start_time_ms + 60_000


class Keeping:
    """A producer that keeps (topic, value) of everything it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: Any = None, **_: Any) -> None:
        self.sent.append((topic, value))

    def poll(self, _timeout: float = 0) -> int:
        return 0


class Full(Keeping):
    def produce(self, topic: str, value: bytes, key: Any = None, **_: Any) -> None:
        raise BufferError("queue full")


def _outputs(settings: Settings, main: Keeping, side: Keeping, log: bool) -> Outputs:
    t = settings.topics
    topic = by_record(t, "FeatureLog")
    return Outputs(
        main,  # type: ignore[arg-type]
        DeliveryTracker(),
        "w",
        predictions=(by_record(t, "Prediction"), codec_for(settings, by_record(t, "Prediction"))),
        dead_letters=(by_record(t, "DeadLetter"), codec_for(settings, by_record(t, "DeadLetter"))),
        shadow=None,
        drift=None,
        side_producer=side,  # type: ignore[arg-type]
        feature_log=FeatureLogOutput(topic, codec_for(settings, topic), SPEC) if log else None,
    )


def _store(users: int) -> InMemoryFeatureStore:
    """Every item, and only the first ``users`` users (the others are served defaults)."""
    store = InMemoryFeatureStore(SPEC)
    keys, rows = WORLD.features("user")
    store.put_many("user", keys[:users], rows[:users])
    store.put_many("item", *WORLD.features("item"))
    return store


def test_training_reads_the_rows_the_worker_served_not_todays(model: LoadedModel) -> None:  # noqa: F811
    settings = Settings()
    events = [strip_private(e) for e in WORLD.events(200)]
    values = CODEC.encode_many(events) + BAD[:3]
    messages = [Inbound(settings.topics.events, 0, i, b"k", v) for i, v in enumerate(values)]
    store = _store(users=20)
    result = process_batch(Stages.of(CODEC, RULES, SPEC, store.get_many, model), messages, NOW)
    assert result.served is not None and len(result.dead_letters) == 3
    served = [e for e in events if e["event_id"] in set(result.served.field("event_id"))]
    # The matrix the batch was scored with, rebuilt by hand from the store as it was then.
    expected = assemble(SPEC, served, store.get_many(lookup_requests(SPEC, served))).values
    main, side = Keeping(), Keeping()
    _outputs(settings, main, side, log=True).publish(messages, result, [], NOW)
    logged = [v for topic, v in side.sent if topic == settings.topics.feature_log]
    assert len(logged) == 1  # one message for the whole batch
    assert [topic for topic, _ in main.sent].count(settings.topics.feature_log) == 0

    # Afterwards the entity features move (every user's row changes), and one event was never
    # logged: it falls back to the online store as it is now, counted.
    keys, rows = WORLD.features("user")
    store.put_many("user", keys, rows + 1.0)
    codec = codec_for(settings, by_record(settings.topics, "FeatureLog"))
    index = FeatureLogIndex(SPEC, [codec.decode_one(v) for v in logged])
    assert len(index) == len(served)
    labels = {str(e["event_id"]): True for e in served}
    extra = strip_private(WORLD.events(1, start_index=10_000)[0])
    labels[str(extra["event_id"])] = False
    ts = build_training_set(SPEC, store, [*served, extra], labels, logged=index)
    assert ts.sources == {"feature_log": len(served), "online_store_now": 1}
    assert np.array_equal(ts.X[:-1], expected, equal_nan=True)  # bit for bit, NaN included
    found = np.asarray([not m for m in result.served.missing], dtype=bool)
    assert found.sum() < len(served)  # some users were served their defaults, and logged so


def test_a_feature_log_that_cannot_be_written_costs_no_prediction(model: LoadedModel) -> None:  # noqa: F811
    settings = Settings()
    events = [strip_private(e) for e in WORLD.events(50)]
    messages = [
        Inbound(settings.topics.events, 0, i, b"k", v)
        for i, v in enumerate(CODEC.encode_many(events))
    ]
    store = _store(users=30)
    result = process_batch(Stages.of(CODEC, RULES, SPEC, store.get_many, model), messages, NOW)
    failed = metrics.PUBLISH_FAILURES.labels(topic=settings.topics.feature_log)
    before = failed._value.get()
    main = Keeping()
    started = time.monotonic()
    _outputs(settings, main, Full(), log=True).publish(messages, result, [], NOW)
    assert time.monotonic() - started < 5  # never waited on the full queue
    assert [topic for topic, _ in main.sent] == [settings.topics.predictions] * 50
    assert failed._value.get() == before + 1


def test_the_feature_log_can_be_turned_off(model: LoadedModel) -> None:  # noqa: F811
    settings = Settings()
    events = [strip_private(e) for e in WORLD.events(10)]
    messages = [
        Inbound(settings.topics.events, 0, i, b"k", v)
        for i, v in enumerate(CODEC.encode_many(events))
    ]
    store = _store(users=30)
    result = process_batch(Stages.of(CODEC, RULES, SPEC, store.get_many, model), messages, NOW)
    side = Keeping()
    _outputs(settings, Keeping(), side, log=False).publish(messages, result, [], NOW)
    assert side.sent == []
    assert Settings(features={"log": False}).features.log is False
