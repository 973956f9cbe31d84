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


def test_assemble_matches_rows_computed_by_hand() -> None:
    """An oracle independent of ``assemble``: two events, written out column by column."""
    spec = FeatureSpec.from_dict(
        {
            "version": "golden",
            "groups": [
                {
                    "name": "user",
                    "key_field": "user_id",
                    "features": [
                        {"name": "u_a", "default": 0.25, "min": -9, "max": 9},
                        {"name": "u_b", "default": -1.0, "min": -9, "max": 9},
                    ],
                },
                {
                    "name": "item",
                    "key_field": "item_id",
                    "features": [{"name": "i_a", "default": 7.0, "min": -9, "max": 9}],
                },
            ],
        }
    )
    store = InMemoryFeatureStore(spec)
    store.put_many("user", ["known"], [[1.5, -2.0]])
    store.put_many("item", ["i1"], [[3.0]])
    hour = 3_600_000
    events = [
        {  # known user, known item, 13:xx UTC, RTT unknown, not sponsored (null)
            "user_id": "known", "item_id": "i1", "position": 4, "session_depth": 2,
            "item_age_hours": 0.5, "user_tenure_days": 30, "network_rtt_ms": None,
            "is_following_author": True, "is_video": False, "is_sponsored": None,
            "surface": "SEARCH", "device": "ANDROID", "event_time": 13 * hour + 59_999,
        },
        {  # unknown user (defaults), unknown item (default), next day 00:xx, odd enum values
            "user_id": "nobody", "item_id": "i9", "position": 0, "session_depth": 1,
            "item_age_hours": 48.0, "user_tenure_days": 0, "network_rtt_ms": 120.5,
            "is_following_author": False, "is_video": True, "is_sponsored": True,
            "surface": "NEW_SURFACE", "device": "WEB", "event_time": 24 * hour + 1,
        },
    ]  # fmt: skip
    matrix = assemble(spec, events, store.get_many(lookup_requests(spec, events)))
    nan = float("nan")
    expected = [
        # u_a   u_b   i_a  pos depth age  tenure rtt follow video spons surface device hour
        [1.5, -2.0, 3.0, 4, 2, 0.5, 30, nan, 1, 0, 0, 4, 2, 13],
        [0.25, -1.0, 7.0, 0, 1, 48.0, 0, 120.5, 0, 1, 1, 0, 3, 0],
    ]
    np.testing.assert_array_equal(matrix.values, np.asarray(expected))
    assert matrix.missing == ((), ("user", "item"))
    assert matrix.names[:3] == ("u_a", "u_b", "i_a") and matrix.names[-1] == "hour_of_day"
