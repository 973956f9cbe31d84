"""The feature row the model is given for a known event, written out by hand.

The expected rows below are built from schemas/features.json and the events' own fields, never
with ``assemble()``: entity groups in spec order (user_f00..15, item_f00..15, stored as float32),
then the context features in spec order: position, session_depth, item_age_hours,
user_tenure_days, network_rtt_ms (NaN when null), is_following_author, is_video, is_sponsored
(1 or 0), surface and device (the symbol's index), hour_of_day (UTC hour of event_time).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.records import Inbound
from services.features.assemble import assemble, lookup_requests
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.stages import Stages
from services.validation.rules import RecordRules

SPEC = FeatureSpec.load()
RULES = RecordRules.load("Interaction")
SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
IDS = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
CODEC = AvroCodec(SCHEMAS["Interaction"], IDS, "feed.interactions.v1-value")

DAY = 1_763_769_600_000  # 2025-11-22T00:00:00Z
MORNING = DAY + 8 * 3_600_000 + 61_234  # 08:01:01.234Z
LAST_NIGHT = DAY - 30 * 60_000  # 2025-11-21T23:30:00Z
NOW = MORNING + 60_000

# Stored rows: exact in float32 except user_f03 (0.1) and item_f07 (-3.3), which come back as
# the nearest float32.
USER_ROW = [-2.0, -1.75, -1.5, 0.1, -1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
USER_ROW += [1.5, 49.5]
ITEM_ROW = [3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -3.3, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0]
ITEM_ROW += [-50.0]

KNOWN: dict[str, Any] = {
    "event_id": "evt-known",
    "event_time": MORNING,
    "user_id": "u-1",
    "item_id": "i-1",
    "surface": "HOME_FEED",
    "device": "ANDROID",
    "country": "DE",
    "position": 3,
    "session_depth": 12,
    "item_age_hours": 5.5,
    "user_tenure_days": 400,
    "network_rtt_ms": 87.5,
    "is_following_author": True,
    "is_video": False,
    "is_sponsored": True,
}
UNKNOWN_ITEM: dict[str, Any] = KNOWN | {
    "event_id": "evt-unknown-item",
    "event_time": LAST_NIGHT,
    "item_id": "i-not-in-the-store",
    "surface": "NOTIFICATIONS",
    "device": "WEB",
    "position": 0,
    "session_depth": 0,
    "item_age_hours": 0.25,
    "user_tenure_days": 1,
    "network_rtt_ms": None,
    "is_following_author": False,
    "is_video": True,
    "is_sponsored": False,
}


def f32(x: float) -> float:
    return float(np.float32(x))


EXPECTED_KNOWN = (
    [f32(v) for v in USER_ROW]
    + [f32(v) for v in ITEM_ROW]
    # position, session_depth, item_age_hours, user_tenure_days, network_rtt_ms
    + [3.0, 12.0, 5.5, 400.0, 87.5]
    # is_following_author, is_video, is_sponsored, surface HOME_FEED, device ANDROID, 08h
    + [1.0, 0.0, 1.0, 1.0, 2.0, 8.0]
)
EXPECTED_UNKNOWN_ITEM = (
    [f32(v) for v in USER_ROW]
    + [0.0] * 16  # the item group's declared defaults
    + [0.0, 0.0, 0.25, 1.0, math.nan]
    # is_following_author, is_video, is_sponsored, surface NOTIFICATIONS, device WEB, 23h
    + [0.0, 1.0, 0.0, 5.0, 3.0, 23.0]
)


def store() -> InMemoryFeatureStore:
    s = InMemoryFeatureStore(SPEC)
    s.put_many("user", ["u-1"], np.asarray([USER_ROW], dtype=np.float32))
    s.put_many("item", ["i-1"], np.asarray([ITEM_ROW], dtype=np.float32))
    return s


class Recording:
    """The model's booster, keeping every matrix it is asked to score."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[npt.NDArray[np.float64]] = []

    def predict(self, X: npt.NDArray[np.float64], **kwargs: Any) -> Any:
        self.seen.append(np.array(X, copy=True))
        return self.inner.predict(X, **kwargs)


def test_the_hand_written_rows_agree_with_the_spec_and_the_calendar() -> None:
    # Guards on the oracle itself, from outside the code under test.
    assert len(EXPECTED_KNOWN) == len(EXPECTED_UNKNOWN_ITEM) == 16 + 16 + 11
    assert datetime.fromtimestamp(MORNING / 1000, UTC).hour == 8
    assert datetime.fromtimestamp(LAST_NIGHT / 1000, UTC).hour == 23
    assert EXPECTED_KNOWN[3] != 0.1 and abs(EXPECTED_KNOWN[3] - 0.1) < 1e-7  # float32 storage


def test_the_model_is_given_exactly_the_hand_computed_rows(model: LoadedModel) -> None:
    recording = Recording(model.model)
    spy = LoadedModel(model.name, model.version, model.metadata, recording)
    messages = [
        Inbound("feed.interactions.v1", 0, i, b"k", v, ())
        for i, v in enumerate(CODEC.encode_many([KNOWN, UNKNOWN_ITEM]))
    ]
    result = process_batch(Stages.of(CODEC, RULES, SPEC, store().get_many, spy), messages, NOW)
    assert result.dead_letters == []
    expected = np.asarray([EXPECTED_KNOWN, EXPECTED_UNKNOWN_ITEM], dtype=np.float64)
    assert len(recording.seen) == 1
    np.testing.assert_array_equal(recording.seen[0], expected, strict=True)
    # The scores served are the model's on those rows, row by row.
    scores = [p.record["score"] for p in result.predictions]
    assert scores == model.predict(expected).tolist()
    assert [p.record["event_id"] for p in result.predictions] == ["evt-known", "evt-unknown-item"]
    assert [p.record["missing_features"] for p in result.predictions] == [[], ["item"]]


def test_assemble_builds_the_hand_computed_rows() -> None:
    events = [KNOWN, UNKNOWN_ITEM]
    matrix = assemble(SPEC, events, store().get_many(lookup_requests(SPEC, events)))
    expected = np.asarray([EXPECTED_KNOWN, EXPECTED_UNKNOWN_ITEM], dtype=np.float64)
    np.testing.assert_array_equal(matrix.values, expected, strict=True)
    assert matrix.missing == ((), ("item",))
