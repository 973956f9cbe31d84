"""Feature rows from events and looked-up entity features: one function for training and serving.

Training builds its matrix with ``assemble`` over features read through the same FeatureStore the
worker uses, so a model never sees values at training time that scoring would compute differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec
from services.features.store import Lookup

SURFACES = ("UNKNOWN", "HOME_FEED", "EXPLORE", "PROFILE", "SEARCH", "NOTIFICATIONS")
DEVICES = ("UNKNOWN", "IOS", "ANDROID", "WEB")
_SURFACE_CODE = {s: i for i, s in enumerate(SURFACES)}
_DEVICE_CODE = {d: i for i, d in enumerate(DEVICES)}
MS_PER_HOUR = 3_600_000

# Features taken from the event itself, in matrix order.
CONTEXT_FEATURES = (
    "position",
    "session_depth",
    "item_age_hours",
    "user_tenure_days",
    "network_rtt_ms",
    "is_following_author",
    "is_video",
    "is_sponsored",
    "surface",
    "device",
    "hour_of_day",
)


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    """Model input for a batch, and per row the groups that fell back to defaults."""

    values: npt.NDArray[np.float64]
    names: tuple[str, ...]
    missing: tuple[tuple[str, ...], ...]


def feature_names(spec: FeatureSpec) -> tuple[str, ...]:
    """Column order of every matrix built for ``spec``."""
    return tuple(n for g in spec.groups for n in g.names) + CONTEXT_FEATURES


def lookup_requests(
    spec: FeatureSpec, events: Sequence[Mapping[str, Any]]
) -> dict[str, Sequence[str]]:
    """The entity keys each group needs for ``events``.

    >>> from services.features.spec import FeatureSpec
    >>> spec = FeatureSpec.from_dict({"version": "v1", "groups": [{"name": "user",
    ...     "key_field": "user_id", "features": []}]})
    >>> lookup_requests(spec, [{"user_id": "u1"}, {"user_id": "u2"}])
    {'user': ['u1', 'u2']}
    """
    return {g.name: [str(e[g.key_field]) for e in events] for g in spec.groups}


def context_matrix(events: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float64]:
    """The event-derived columns (``CONTEXT_FEATURES``); an unknown RTT is NaN.

    >>> ev = {"position": 2, "session_depth": 5, "item_age_hours": 1.5, "user_tenure_days": 9,
    ...       "network_rtt_ms": None, "is_following_author": True, "is_video": False,
    ...       "is_sponsored": False, "surface": "EXPLORE", "device": "WEB",
    ...       "event_time": 5 * MS_PER_HOUR + 1}
    >>> context_matrix([ev]).tolist()
    [[2.0, 5.0, 1.5, 9.0, nan, 1.0, 0.0, 0.0, 2.0, 3.0, 5.0]]
    """
    out = np.empty((len(events), len(CONTEXT_FEATURES)), dtype=np.float64)
    for i, e in enumerate(events):
        rtt = e.get("network_rtt_ms")
        out[i] = (
            e["position"],
            e["session_depth"],
            e["item_age_hours"],
            e["user_tenure_days"],
            np.nan if rtt is None else rtt,
            e["is_following_author"],
            e["is_video"],
            e.get("is_sponsored", False),
            _SURFACE_CODE.get(e["surface"], 0),
            _DEVICE_CODE.get(e["device"], 0),
            (e["event_time"] // MS_PER_HOUR) % 24,
        )
    return out


def assemble(
    spec: FeatureSpec, events: Sequence[Mapping[str, Any]], lookups: Mapping[str, Lookup]
) -> FeatureMatrix:
    """Concatenate entity features (spec order) and context features into one matrix."""
    parts = [lookups[g.name].values.astype(np.float64) for g in spec.groups]
    parts.append(context_matrix(events))
    values = np.hstack(parts) if events else np.empty((0, len(feature_names(spec))))
    missing = tuple(
        tuple(g.name for g in spec.groups if not lookups[g.name].found[i])
        for i in range(len(events))
    )
    return FeatureMatrix(values, feature_names(spec), missing)
