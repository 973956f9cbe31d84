"""History the integration fixture trains on covers every hour of the day, so a model's quality
on the stream does not depend on when the tests run (the delivery world's rush hours)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.core.settings import Settings
from services.domain.config import domain_of
from services.features.store import InMemoryFeatureStore
from services.synthetic import delivery
from services.synthetic.history import training_history
from services.training.dataset import build_training_set
from services.training.train import fit, predict

HOUR_MS = 3_600_000


def _clock(hh: int, mm: int) -> int:
    return int(datetime(2026, 12, 3, hh, mm, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("now", [_clock(10, 59), _clock(12, 30)], ids=["10:59", "12:30"])
def test_history_covers_every_hour_and_the_model_is_good_on_the_stream(now: int) -> None:
    domain = domain_of(Settings(domain="delivery"))
    spec = domain.spec
    # As the fixture does: the stream's world starts now, history at indexes no test streams.
    world = delivery.make(spec, seed=7, entities=400, start_time_ms=now)
    history = training_history(delivery.make, spec, now, 6000, 10_000_000, seed=7, entities=400)
    hours = {(e["event_time"] // HOUR_MS) % 24 for e in history}
    assert hours == set(range(24))
    assert max(e["event_time"] for e in history) < now
    assert min(e["event_time"] for e in history) >= now - 24 * HOUR_MS
    assert not {e["event_id"] for e in history} & {e["event_id"] for e in world.events(6000)}

    store = InMemoryFeatureStore(spec)
    for g in spec.groups:
        store.put_many(g.name, *world.features(g.name))
    labels = {x["event_id"]: x["delivery_minutes"] for x in world.labels(history)}
    ts = build_training_set(spec, store, history, labels, task=domain.task)
    trained = fit(ts.X, ts.y, ts.names, "lightgbm", 7, None, domain.task)
    # The stream of the tests: the first minutes after now (rush hour at 12:30; at 10:59 the
    # stream runs into 11:00 when it is long enough, here from index 60,000).
    for start in (0, 60_000):
        raw = world.events(1500, start_index=start)
        y = np.asarray([x["delivery_minutes"] for x in world.labels(raw)])
        served = build_training_set(
            spec, store, raw, {e["event_id"]: 0.0 for e in raw}, task=domain.task
        )
        mae = float(np.abs(predict(trained, served.X, domain.task) - y).mean())
        assert mae < 1.3 * delivery.oracle_mae(), (start, mae)
