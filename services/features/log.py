"""The feature log: the entity features a batch was served with, one ``FeatureLog`` record per
batch, and the index training reads back by event id.

Each group's rows travel as their exact float32 bytes (and one byte per row for "found"), so a
row read back is bit for bit the row the worker assembled; the event-derived columns are not
logged, because ``assemble`` rebuilds them from the event itself. Pure: no IO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec
from services.features.store import Lookup

# A record stays well under Kafka's default 1 MB message limit: a batch with more rows than
# fit in this many bytes is cut into a few records.
MAX_RECORD_BYTES = 512_000
ROW_OVERHEAD_BYTES = 48  # an event id (a UUID) and its array framing, per row


def rows_per_record(spec: FeatureSpec) -> int:
    """How many rows one record holds for ``spec`` (at least one).

    >>> from services.features.spec import FeatureDef, GroupSpec
    >>> g = GroupSpec("user", "who", tuple(FeatureDef(f"f{i}", 0, 0, 1) for i in range(16)))
    >>> rows_per_record(FeatureSpec("v", (g,)))
    4530
    """
    width = sum(g.width * 4 + 1 for g in spec.groups)
    return max(1, MAX_RECORD_BYTES // (width + ROW_OVERHEAD_BYTES))


def feature_log_records(
    spec: FeatureSpec,
    model_name: str,
    event_ids: Sequence[str],
    versions: Sequence[str],
    lookups: Mapping[str, Lookup],
    scored_at: int,
) -> list[dict[str, Any]]:
    """The ``FeatureLog`` records of one batch: usually one; rows in ``event_ids`` order.

    ``lookups`` holds, per group, the rows the batch was assembled with (one per event).

    >>> from services.features.spec import FeatureDef, GroupSpec
    >>> g = GroupSpec("user", "who", (FeatureDef("a", 0.5, 0, 1),))
    >>> found = Lookup(np.asarray([[0.25], [0.5]], dtype=np.float32), np.asarray([True, False]))
    >>> [r] = feature_log_records(FeatureSpec("v1", (g,)), "m", ["e1", "e2"], ["3", "3"],
    ...                           {"user": found}, 7)
    >>> r["model_versions"], r["groups"][0]["found"], len(r["groups"][0]["values"])
    (['3'], b'\\x01\\x00', 8)
    """
    n = len(event_ids)
    step = rows_per_record(spec)
    out = []
    for start in range(0, n, step):
        end = min(n, start + step)
        part = list(versions[start:end])
        uniform = all(v == part[0] for v in part)
        groups = []
        for g in spec.groups:
            rows = lookups[g.name]
            values = np.ascontiguousarray(rows.values[start:end], dtype="<f4")
            found = np.ascontiguousarray(rows.found[start:end], dtype=np.uint8)
            groups.append(
                {
                    "name": g.name,
                    "features": list(g.names),
                    "found": found.tobytes(),
                    "values": values.tobytes(),
                }
            )
        out.append(
            {
                "model_name": model_name,
                "spec_version": spec.version,
                "scored_at": scored_at,
                "event_ids": list(event_ids[start:end]),
                "model_versions": part[:1] if uniform else part,
                "groups": groups,
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class LoggedRow:
    """Where one event's logged row is: its record and its row there."""

    record: int
    row: int


class FeatureLogIndex:
    """Logged rows by event id, read back from ``FeatureLog`` records.

    Only records of ``spec``'s version whose groups and columns match it are indexed (a log
    written under another spec is not these features); ``skipped_records`` counts the others.
    An event logged twice (scored again after a restart) keeps its first row: the score
    downstream consumers acted on.

    ``wanted``: keep only these events' rows (the training set's), so memory follows the rows
    used, not the log's size; ``skipped_rows`` counts the others by ``skip_reason(event_id)``
    (``not_wanted`` without it).

    >>> from services.features.spec import FeatureDef, GroupSpec
    >>> spec = FeatureSpec("v1", (GroupSpec("user", "who", (FeatureDef("a", 0.5, 0, 1),)),))
    >>> rows = Lookup(np.asarray([[0.25], [0.5]], dtype=np.float32), np.asarray([True, True]))
    >>> records = feature_log_records(spec, "m", ["e1", "e2"], ["3", "3"], {"user": rows}, 7)
    >>> index = FeatureLogIndex(spec, records, wanted={"e2"})
    >>> len(index), "e2" in index, dict(index.skipped_rows)
    (1, True, {'not_wanted': 1})
    """

    def __init__(
        self,
        spec: FeatureSpec,
        records: Iterable[Mapping[str, Any]],
        wanted: Collection[str] | None = None,
        skip_reason: Callable[[str], str] | None = None,
    ) -> None:
        self.spec = spec
        self._groups: list[dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]] = []
        self._where: dict[str, LoggedRow] = {}
        self.skipped_records = 0
        self.skipped_rows: Counter[str] = Counter()
        for record in records:
            groups = self._read(record)
            if groups is None:
                self.skipped_records += 1
                continue
            ids = [str(e) for e in record["event_ids"]]
            if wanted is not None:
                keep = np.asarray([i in wanted for i in ids], dtype=bool)
                for i in (i for i, k in zip(ids, keep, strict=True) if not k):
                    self.skipped_rows[skip_reason(i) if skip_reason else "not_wanted"] += 1
                if not keep.any():
                    continue
                ids = [i for i, k in zip(ids, keep, strict=True) if k]
                groups = {name: (v[keep], f[keep]) for name, (v, f) in groups.items()}
            at = len(self._groups)
            self._groups.append(groups)
            for row, event_id in enumerate(ids):
                self._where.setdefault(event_id, LoggedRow(at, row))

    def _read(
        self, record: Mapping[str, Any]
    ) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] | None:
        if record.get("spec_version") != self.spec.version:
            return None
        n = len(record["event_ids"])
        by_name = {g["name"]: g for g in record["groups"]}
        out = {}
        for g in self.spec.groups:
            logged = by_name.get(g.name)
            if logged is None or list(logged["features"]) != g.names:
                return None
            values = np.frombuffer(logged["values"], dtype="<f4")
            found = np.frombuffer(logged["found"], dtype=np.uint8)
            if values.size != n * g.width or found.size != n:
                return None
            out[g.name] = (values.reshape(n, g.width).astype(np.float32), found.astype(bool))
        return out

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._where

    def lookups(self, event_ids: Sequence[str]) -> dict[str, Lookup]:
        """Per group, the logged rows of ``event_ids`` (every one must be logged)."""
        where = [self._where[e] for e in event_ids]
        out = {}
        for g in self.spec.groups:
            values = np.empty((len(where), g.width), dtype=np.float32)
            found = np.empty(len(where), dtype=bool)
            for i, w in enumerate(where):
                v, f = self._groups[w.record][g.name]
                values[i] = v[w.row]
                found[i] = f[w.row]
            out[g.name] = Lookup(values, found)
        return out
