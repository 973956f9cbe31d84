"""The FeatureStore seam, and the in-memory fake used by unit tests of pure code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec, GroupSpec

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Lookup:
    """Feature rows for a batch of keys of one group, and which keys were found.

    Missing rows hold the group's declared defaults.
    """

    values: Matrix  # shape (len(keys), group.width)
    found: npt.NDArray[np.bool_]  # shape (len(keys),)


class FeatureStore(Protocol):
    """Online features by entity. Implementations: ``RedisFeatureStore``, ``InMemoryFeatureStore``;
    both pass ``tests/contract/test_feature_store.py``."""

    spec: FeatureSpec

    def get_many(self, requests: dict[str, Sequence[str]]) -> dict[str, Lookup]:
        """Rows for each group's keys, all groups in one round trip.

        Raises:
            FeatureStoreUnavailable: the store did not answer.
        """
        ...

    def put_many(self, group: str, keys: Sequence[str], values: Matrix) -> int:
        """Write rows (shape ``(len(keys), width)``) for ``keys``; returns how many were written."""
        ...


def defaults_matrix(group: GroupSpec, n: int) -> Matrix:
    """``n`` rows of the group's declared defaults.

    >>> from services.features.spec import FeatureDef
    >>> g = GroupSpec("user", "who", (FeatureDef("a", 0.5, 0, 1),))
    >>> defaults_matrix(g, 2).tolist()
    [[0.5], [0.5]]
    """
    return np.tile(np.asarray(group.defaults, dtype=np.float32), (n, 1))


def lookup_from_rows(
    group: GroupSpec, keys: Sequence[str], rows: Mapping[str, npt.NDArray[np.float32]]
) -> Lookup:
    """A ``Lookup`` for ``keys``: the row when ``rows`` has one, else the group's defaults."""
    values = defaults_matrix(group, len(keys))
    found = np.zeros(len(keys), dtype=np.bool_)
    for i, key in enumerate(keys):
        row = rows.get(key)
        if row is not None:
            values[i] = row
            found[i] = True
    return Lookup(values, found)


class InMemoryFeatureStore:
    """A dict-backed FeatureStore for tests: same contract, no network."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._rows: dict[tuple[str, str], Matrix] = {}

    def get_many(self, requests: dict[str, Sequence[str]]) -> dict[str, Lookup]:
        return {
            name: lookup_from_rows(
                self.spec.group(name),
                keys,
                {k: self._rows[(name, k)] for k in keys if (name, k) in self._rows},
            )
            for name, keys in requests.items()
        }

    def put_many(self, group: str, keys: Sequence[str], values: Matrix) -> int:
        g = self.spec.group(group)
        values = np.asarray(values, dtype=np.float32).reshape(len(keys), g.width)
        for key, row in zip(keys, values, strict=True):
            self._rows[(group, key)] = row.copy()
        return len(keys)
