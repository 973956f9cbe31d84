"""Entity features as they were: snapshots with a validity time, joined as of each event's time
(point-in-time, as Feast's historical retrieval does), and the online store named for what it is.

Training asks a ``FeatureSource`` for the rows of events the feature log does not hold. A
``PointInTime`` source answers each event with the snapshot valid at its time; ``OnlineStoreNow``
answers with today's values, which may already contain the outcome (label leakage), so training
counts and reports every row it took from there.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec, GroupSpec
from services.features.store import FeatureStore, Lookup, defaults_matrix

VALID_FROM = "valid_from"  # the snapshot files' validity column (epoch ms or ISO-8601, UTC)


class FeatureSource(Protocol):
    """Entity rows for historical events; ``kind`` names where they come from in reports."""

    kind: str

    def as_of(
        self, requests: dict[str, Sequence[str]], times: npt.NDArray[np.int64]
    ) -> dict[str, Lookup]:
        """Per group, the row of each requested key as of the matching event time."""
        ...


class OnlineStoreNow:
    """The online store as it is now, whatever the event's time: not point-in-time."""

    kind = "online_store_now"

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def as_of(
        self, requests: dict[str, Sequence[str]], times: npt.NDArray[np.int64]
    ) -> dict[str, Lookup]:
        return self.store.get_many(requests)


@dataclass(frozen=True, slots=True)
class Snapshots:
    """One group's snapshots: row ``i`` holds ``keys[i]``'s values from ``valid_from[i]`` on."""

    keys: Sequence[str]
    valid_from: npt.NDArray[np.int64]
    values: npt.NDArray[np.float32]  # (len(keys), group width)

    def latest(self, now_ms: int) -> tuple[list[str], npt.NDArray[np.float32], int]:
        """Each key's newest row valid at ``now_ms``: what the online store keeps. Also the
        count of rows not valid yet (later than ``now_ms``), which are left out.

        >>> s = Snapshots(["a", "a", "b"], np.array([10, 20, 30]), np.array([[1], [2], [3]],
        ...               dtype=np.float32))
        >>> keys, values, future = s.latest(25)
        >>> keys, values.tolist(), future
        (['a'], [[2.0]], 1)
        """
        newest: dict[str, int] = {}
        future = 0
        for i, (key, t) in enumerate(zip(self.keys, self.valid_from.tolist(), strict=True)):
            if t > now_ms:
                future += 1
            elif key not in newest or t >= self.valid_from[newest[key]]:
                newest[key] = i
        rows = list(newest.values())
        return list(newest), self.values[rows].reshape(len(rows), -1), future


class _GroupHistory:
    def __init__(self, group: GroupSpec, snaps: Snapshots) -> None:
        self.group = group
        order = np.lexsort((snaps.valid_from, np.asarray(snaps.keys, dtype=object)))
        self._times: dict[str, list[int]] = {}
        self._rows: dict[str, list[int]] = {}
        for i in order.tolist():
            key = str(snaps.keys[i])
            self._times.setdefault(key, []).append(int(snaps.valid_from[i]))
            self._rows.setdefault(key, []).append(i)
        self._values = np.asarray(snaps.values, dtype=np.float32)

    def lookup(self, keys: Sequence[str], times: npt.NDArray[np.int64]) -> Lookup:
        values = defaults_matrix(self.group, len(keys))
        found = np.zeros(len(keys), dtype=bool)
        for i, (key, t) in enumerate(zip(keys, times.tolist(), strict=True)):
            history = self._times.get(key)
            if history is None:
                continue
            at = bisect.bisect_right(history, t) - 1
            if at >= 0:
                values[i] = self._values[self._rows[key][at]]
                found[i] = True
        return Lookup(values, found)


class PointInTime:
    """Each event's entity rows as of its time: the newest snapshot with ``valid_from`` at or
    before the event time; an entity with none yet gets the declared defaults (not found).

    >>> from services.features.spec import FeatureDef
    >>> g = GroupSpec("user", "who", (FeatureDef("a", -1.0, -9, 9),))
    >>> snaps = Snapshots(["u", "u"], np.array([100, 200]), np.array([[1], [2]], dtype=np.float32))
    >>> got = PointInTime(FeatureSpec("v", (g,)), {"user": snaps}).as_of(
    ...     {"user": ["u", "u", "u"]}, np.array([50, 150, 250]))["user"]
    >>> got.values.ravel().tolist(), got.found.tolist()
    ([-1.0, 1.0, 2.0], [False, True, True])
    """

    kind = "point_in_time"

    def __init__(self, spec: FeatureSpec, snapshots: Mapping[str, Snapshots]) -> None:
        self.spec = spec
        self._groups = {g.name: _GroupHistory(g, snapshots[g.name]) for g in spec.groups}

    def as_of(
        self, requests: dict[str, Sequence[str]], times: npt.NDArray[np.int64]
    ) -> dict[str, Lookup]:
        return {name: self._groups[name].lookup(keys, times) for name, keys in requests.items()}
