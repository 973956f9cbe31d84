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

from services.codec.columns import column
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


def _numbers(values: list[Any]) -> npt.NDArray[np.float64]:
    """A numeric column; ``None`` becomes NaN (unknown)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # a None among them
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def context_matrix(
    events: Sequence[Mapping[str, Any]], out: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """The event-derived columns (``CONTEXT_FEATURES``), column by column; an unknown RTT is
    NaN. Fills ``out`` (n x 11) when given.

    >>> ev = {"position": 2, "session_depth": 5, "item_age_hours": 1.5, "user_tenure_days": 9,
    ...       "network_rtt_ms": None, "is_following_author": True, "is_video": False,
    ...       "is_sponsored": False, "surface": "EXPLORE", "device": "WEB",
    ...       "event_time": 5 * MS_PER_HOUR + 1}
    >>> context_matrix([ev]).tolist()
    [[2.0, 5.0, 1.5, 9.0, nan, 1.0, 0.0, 0.0, 2.0, 3.0, 5.0]]
    """
    n = len(events)
    if out is None:
        out = np.empty((n, len(CONTEXT_FEATURES)), dtype=np.float64)
    for j, name in enumerate(CONTEXT_FEATURES[:8]):
        values = column(events, name)
        if name == "is_sponsored":
            values = [False if v is None else v for v in values]
        out[:, j] = _numbers(values)
    out[:, 8] = [_SURFACE_CODE.get(v, 0) for v in column(events, "surface")]
    out[:, 9] = [_DEVICE_CODE.get(v, 0) for v in column(events, "device")]
    times = np.asarray(column(events, "event_time"), dtype=np.int64)
    out[:, 10] = (times // MS_PER_HOUR) % 24
    return out


def assemble(
    spec: FeatureSpec, events: Sequence[Mapping[str, Any]], lookups: Mapping[str, Lookup]
) -> FeatureMatrix:
    """Concatenate entity features (spec order) and context features into one matrix."""
    names = feature_names(spec)
    values = np.empty((len(events), len(names)), dtype=np.float64)  # one preallocated matrix
    at = 0
    for g in spec.groups:
        values[:, at : at + g.width] = lookups[g.name].values
        at += g.width
    if events:
        context_matrix(events, values[:, at:])
    found = [lookups[g.name].found for g in spec.groups]
    if all(f.all() for f in found):
        missing: tuple[tuple[str, ...], ...] = ((),) * len(events)
    else:
        missing = tuple(
            tuple(g.name for g, f in zip(spec.groups, found, strict=True) if not f[i])
            for i in range(len(events))
        )
    return FeatureMatrix(values, names, missing)
