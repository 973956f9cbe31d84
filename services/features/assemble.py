"""Feature rows from events and looked-up entity features: one function for training and serving.

Training builds its matrix with ``assemble`` over features read through the same FeatureStore the
worker uses, so a model never sees values at training time that scoring would compute differently.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.codec.columns import column
from services.features.spec import ContextDef, FeatureSpec
from services.features.store import Lookup

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0


@dataclass(frozen=True, slots=True)
class FeatureMatrix:
    """Model input for a batch, and per row the groups that fell back to defaults."""

    values: npt.NDArray[np.float64]
    names: tuple[str, ...]
    missing: tuple[tuple[str, ...], ...]


def context_names(spec: FeatureSpec) -> tuple[str, ...]:
    """The event-derived columns, in matrix order (one-hot features expand to a column each)."""
    return tuple(c for d in spec.context for c in d.columns)


def feature_names(spec: FeatureSpec) -> tuple[str, ...]:
    """Column order of every matrix built for ``spec``: entity groups, then context."""
    return tuple(n for g in spec.groups for n in g.names) + context_names(spec)


def lookup_requests(
    spec: FeatureSpec, events: Sequence[Mapping[str, Any]]
) -> dict[str, Sequence[str]]:
    """The entity keys each group needs for ``events``.

    >>> from services.features.spec import ContextDef, FeatureSpec
    >>> spec = FeatureSpec.from_dict({"version": "v1", "groups": [{"name": "user",
    ...     "key_field": "who", "features": []}]})
    >>> lookup_requests(spec, [{"who": "u1"}, {"who": "u2"}])
    {'user': ['u1', 'u2']}
    """
    return {g.name: [str(e[g.key_field]) for e in events] for g in spec.groups}


def _numbers(values: list[Any]) -> npt.NDArray[np.float64]:
    """A numeric column; ``None`` becomes NaN (filled with the default by the caller)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # a None among them
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _bucket(value: str, buckets: int) -> int:
    """A stable bucket of a string (CRC-32, the same in every process and release)."""
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % buckets


def _codes(values: list[Any], table: Mapping[Any, int], unknown: float) -> npt.NDArray[np.float64]:
    """Each value's code, once per distinct value; ``None`` is NaN, a value not in the table
    gets ``unknown``."""
    seen: dict[Any, float] = {None: np.nan}
    for v in set(values):
        if v not in seen:
            seen[v] = float(table[v]) if v in table else unknown
    return np.asarray([seen[v] for v in values], dtype=np.float64)


def encode(d: ContextDef, values: list[Any], out: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Write feature ``d`` of a batch (``values``: its field, ``None`` where absent) into ``out``
    (n x ``d.width``); returns which rows fell back to the default."""
    if d.kind == "enum" and d.encoding == "onehot":
        index = {s: i for i, s in enumerate(d.symbols)}
        codes = _codes(values, index, np.nan)
        absent = np.asarray([v is None for v in values], dtype=bool)
        if d.default is not None:
            codes[absent] = index[str(d.default)]
        out[:] = 0.0
        hit = ~np.isnan(codes)
        out[np.nonzero(hit)[0], codes[hit].astype(np.int64)] = 1.0
        return absent
    if d.kind in ("hour", "weekday"):
        col = _numbers(values)
        absent = np.isnan(col)
        days = col // (MS_PER_HOUR if d.kind == "hour" else MS_PER_DAY)
        col = days % 24 if d.kind == "hour" else (days + EPOCH_WEEKDAY) % 7
    elif d.kind == "enum":
        col = _codes(values, {s: i for i, s in enumerate(d.symbols)}, d.fill())
        absent = np.asarray([v is None for v in values], dtype=bool)
    elif d.kind == "category" and d.buckets:
        col = _codes(values, _Hashed(d.buckets), np.nan)
        absent = np.isnan(col)
    elif d.kind == "category":
        col = _codes(values, {s: i for i, s in enumerate(d.symbols)}, float(len(d.symbols)))
        absent = np.isnan(col)
    else:  # number, bool
        col = _numbers(values)
        absent = np.isnan(col)
    if absent.any():
        col[absent] = d.fill()
    out[:, 0] = col
    return absent


class _Hashed(dict[Any, int]):
    """A table holding every string, at its hash bucket."""

    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.buckets = buckets

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __getitem__(self, key: Any) -> int:
        return _bucket(key, self.buckets)


def context_matrix(
    spec: FeatureSpec,
    events: Sequence[Mapping[str, Any]],
    out: npt.NDArray[np.float64] | None = None,
) -> tuple[npt.NDArray[np.float64], list[tuple[str, npt.NDArray[np.bool_]]]]:
    """The event-derived columns of ``spec.context``, feature by feature, into ``out`` when
    given; and, per flagged feature, which rows fell back to its default.

    >>> spec = FeatureSpec.from_dict({"version": "v", "groups": [], "context": [
    ...     {"name": "n", "kind": "number", "default": None, "flag": False},
    ...     {"name": "b", "kind": "bool", "default": False},
    ...     {"name": "e", "kind": "enum", "symbols": ["X", "Y"], "default": "X"},
    ...     {"name": "o", "field": "e", "kind": "enum", "symbols": ["X", "Y"],
    ...      "encoding": "onehot"},
    ...     {"name": "v", "kind": "category", "vocabulary": ["a", "b"]},
    ...     {"name": "h", "field": "t", "kind": "hour"},
    ...     {"name": "w", "field": "t", "kind": "weekday"}]})
    >>> m, flags = context_matrix(spec, [{"n": None, "b": None, "e": "Y", "v": "z",
    ...     "t": 5 * MS_PER_HOUR + 4 * MS_PER_DAY}])
    >>> m.tolist(), [(n, f.tolist()) for n, f in flags]
    ([[nan, 0.0, 1.0, 0.0, 1.0, 2.0, 5.0, 0.0]], [('b', [True])])
    """
    n = len(events)
    if out is None:
        out = np.empty((n, sum(d.width for d in spec.context)), dtype=np.float64)
    flags: list[tuple[str, npt.NDArray[np.bool_]]] = []
    at = 0
    for d in spec.context:
        absent = encode(d, column(events, d.field), out[:, at : at + d.width])
        at += d.width
        if d.flag and absent.any():
            flags.append((d.name, absent))
    return out, flags


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
    flags: list[tuple[str, npt.NDArray[np.bool_]]] = []
    if events:
        flags = context_matrix(spec, events, values[:, at:])[1]
    found = [
        (g.name, ~lookups[g.name].found) for g in spec.groups if not lookups[g.name].found.all()
    ]
    fell_back = found + flags
    if not fell_back:
        missing: tuple[tuple[str, ...], ...] = ((),) * len(events)
    else:
        missing = tuple(
            tuple(name for name, rows in fell_back if rows[i]) for i in range(len(events))
        )
    return FeatureMatrix(values, names, missing)
