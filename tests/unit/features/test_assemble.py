"""Feature assembly: column order, defaults for missing entities, training = serving."""

from __future__ import annotations

import numpy as np

from load.world import World, strip_private
from services.features.assemble import CONTEXT_FEATURES, assemble, feature_names, lookup_requests
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.training.dataset import build_training_set

SPEC = FeatureSpec.load()


def test_columns_are_user_then_item_then_context() -> None:
    names = feature_names(SPEC)
    assert names[:16] == tuple(SPEC.group("user").names)
    assert names[16:32] == tuple(SPEC.group("item").names)
    assert names[32:] == CONTEXT_FEATURES


def test_missing_entities_get_defaults_and_are_flagged() -> None:
    world = World(SPEC, n_users=20, n_items=10, seed=3)
    store = InMemoryFeatureStore(SPEC)
    users, rows = world.features("user")
    store.put_many("user", users[:10], rows[:10])
    store.put_many("item", *world.features("item"))
    events = [strip_private(e) for e in world.events(200)]
    matrix = assemble(SPEC, events, store.get_many(lookup_requests(SPEC, events)))
    for i, e in enumerate(events):
        known = e["user_id"] in set(users[:10])
        assert matrix.missing[i] == (() if known else ("user",))
        user_part = matrix.values[i, :16]
        expected = rows[users.index(e["user_id"])] if known else SPEC.group("user").defaults
        assert np.array_equal(user_part, np.asarray(expected, dtype=np.float32).astype(np.float64))


def test_training_rows_equal_serving_rows() -> None:
    world = World(SPEC, n_users=50, n_items=30, seed=5)
    store = InMemoryFeatureStore(SPEC)
    for group in ("user", "item"):
        store.put_many(group, *world.features(group))
    events = [strip_private(e) for e in world.events(300)]
    labels = {e["event_id"]: bool(i % 2) for i, e in enumerate(events)}
    ts = build_training_set(SPEC, store, events, labels, batch_size=64)
    serving = assemble(SPEC, events, store.get_many(lookup_requests(SPEC, events)))
    assert np.array_equal(ts.X, serving.values, equal_nan=True)
    assert ts.names == serving.names
