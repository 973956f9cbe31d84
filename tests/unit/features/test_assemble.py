"""Feature assembly: column order, defaults for missing entities, training = serving."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from services.features.assemble import assemble, context_names, feature_names, lookup_requests
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.synthetic.world import World, strip_private
from services.training.dataset import build_training_set

SPEC = FeatureSpec.load()
SPEC_FILE = json.loads((Path(__file__).parents[3] / "schemas" / "features.json").read_text())


def test_columns_are_user_then_item_then_context() -> None:
    names = feature_names(SPEC)
    assert names[:16] == tuple(SPEC.group("user").names)
    assert names[16:32] == tuple(SPEC.group("item").names)
    assert names[32:] == context_names(SPEC)
    assert len(names) == 43


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
            "context": SPEC_FILE["context"],  # the feed's declared event features
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
    # A null is_sponsored falls back to its declared default, flagged like a missing entity.
    assert matrix.missing == (("is_sponsored",), ("user", "item"))
    assert (
        matrix.names[:3] == ("u_a", "u_b", "i_a") and matrix.names[-1] == "hour_of_day"
    )  # the feed names it so


def test_every_encoding_matches_rows_computed_by_hand() -> None:
    """One-hot, hashed and vocabulary categories, booleans, day of week, nulls and unknowns."""
    spec = FeatureSpec.from_dict(
        {
            "version": "kinds",
            "groups": [],
            "context": [
                {"name": "amount", "kind": "number", "min": 0, "max": 100, "default": 1.5},
                {"name": "cur", "kind": "enum", "symbols": ["EUR", "USD"], "encoding": "onehot"},
                {"name": "chan", "kind": "enum", "symbols": ["POS", "WEB"], "default": "POS"},
                {"name": "mcc", "kind": "category", "vocabulary": ["5411", "5812"]},
                {"name": "country", "kind": "category", "buckets": 16, "default": -1},
                {"name": "present", "kind": "bool", "default": True, "flag": False},
                {"name": "dow", "field": "t", "kind": "weekday"},
            ],
        }
    )
    day = 86_400_000
    events = [
        {"amount": 12.0, "cur": "USD", "chan": "WEB", "mcc": "5812", "country": "DE",
         "present": False, "t": 4 * day + 5},  # 1970-01-05 was a Monday
        {"amount": None, "cur": "CHF", "chan": "ATM", "mcc": "7995", "country": None,
         "present": None, "t": 10 * day},  # a Sunday; unknown symbols and nulls
    ]  # fmt: skip
    matrix = assemble(spec, events, {})
    de = zlib.crc32(b"DE") % 16
    expected = [
        # amount EUR USD chan mcc country present dow
        [12.0, 0, 1, 1, 1, de, 0, 0],
        [1.5, 0, 0, 0, 2, -1, 1, 6],
    ]
    np.testing.assert_array_equal(matrix.values, np.asarray(expected, dtype=np.float64))
    assert matrix.names == (
        "amount",
        "cur__EUR",
        "cur__USD",
        "chan",
        "mcc",
        "country",
        "present",
        "dow",
    )
    assert matrix.missing == ((), ("amount", "country"))


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"name": "x", "kind": "colour"}, "kind must be one of"),
        ({"name": "x", "kind": "category"}, "either buckets"),
        ({"name": "x", "kind": "category", "buckets": 4, "vocabulary": ["a"]}, "either buckets"),
        ({"name": "x", "kind": "enum", "symbols": ["A"], "default": "B"}, "not one of"),
        ({"name": "x", "kind": "number", "min": 0, "max": 1, "default": 5}, "in [min, max]"),
        ({"name": "x", "kind": "enum", "symbols": ["A"], "encoding": "hot"}, "encoding"),
    ],
)
def test_a_context_feature_that_cannot_encode_is_refused(bad: dict, says: str) -> None:
    from services.core.errors import ConfigError

    with pytest.raises(ConfigError, match=says.replace("[", "\\[")):
        FeatureSpec.from_dict({"version": "v", "groups": [], "context": [bad]})
