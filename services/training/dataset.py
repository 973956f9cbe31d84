"""Training sets built with the serving code path, and validated before anything is trained."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.task import BINARY, Task
from services.features.assemble import assemble, feature_names, lookup_requests
from services.features.history import FeatureSource, OnlineStoreNow
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore, Lookup

FROM_LOG = "feature_log"  # the rows the worker served, read back from the feature log


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Features, labels and the ids they came from; ``missing_share`` per entity group."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[Any]  # the target: 0/1 (binary), a float (regression), a class index
    names: tuple[str, ...]
    event_ids: tuple[str, ...]
    missing_share: dict[str, float]
    # Where the entity rows came from: feature_log, point_in_time or online_store_now -> rows.
    sources: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """SHA-256 of the exact bytes trained on (features, labels, column names)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.X).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        h.update("\x1f".join(self.names).encode())
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What was checked and what failed; training refuses a set with any problem."""

    rows: int
    positives: int
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def build_training_set(
    spec: FeatureSpec,
    store: FeatureStore | None,
    events: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Any],
    batch_size: int = 5000,
    *,
    logged: FeatureLogIndex | None = None,
    source: FeatureSource | None = None,
    task: Task = BINARY,
) -> TrainingSet:
    """Join events to labels by event id and assemble their rows with the serving code.

    An event the feature log holds (``logged``) gets the entity rows it was served with, bit
    for bit. Any other gets them from ``source`` (a point-in-time history), or, without one,
    from ``store`` as it is now; ``TrainingSet.sources`` counts the rows of each origin.
    Events without a label are left out (their outcome is unknown). Labels become the task's
    target: 0/1, the number, or the class's index.
    """
    if source is None:
        source = OnlineStoreNow(store) if store is not None else _NoSource()
    labelled = [e for e in events if e["event_id"] in labels]
    parts: list[npt.NDArray[np.float64]] = []
    missing: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start : start + batch_size]
        lookups, counts = _entity_rows(spec, chunk, logged, source)
        sources.update(counts)
        matrix = assemble(spec, chunk, lookups)
        parts.append(matrix.values)
        for row in matrix.missing:
            missing.update(row)
    n_cols = len(feature_names(spec))
    X = np.vstack(parts) if parts else np.empty((0, n_cols))
    y = task.target(labels[e["event_id"]] for e in labelled)
    names = feature_names(spec)
    share = {g.name: (missing[g.name] / len(labelled) if labelled else 0.0) for g in spec.groups}
    ids = tuple(str(e["event_id"]) for e in labelled)
    return TrainingSet(X, y, names, ids, share, dict(sources))


class _NoSource:
    """No rows beyond the log's: every event must be logged (the caller left the others out)."""

    kind = "none"

    def as_of(
        self, requests: dict[str, Sequence[str]], times: npt.NDArray[np.int64]
    ) -> dict[str, Lookup]:
        raise ValueError(f"{len(times)} events have no logged row and no feature source")


def entity_rows(
    spec: FeatureSpec,
    events: Sequence[Mapping[str, Any]],
    logged: FeatureLogIndex | None,
    source: FeatureSource | None,
    store: FeatureStore | None = None,
) -> tuple[dict[str, Lookup], dict[str, int]]:
    """Per group, the rows of ``events`` as training takes them (`features matrix` too): logged
    where the log has them, else from ``source`` (point in time), else from ``store`` as it is
    now; and how many rows came from each origin."""
    if not events:
        empty = {
            g.name: Lookup(np.empty((0, g.width), np.float32), np.empty(0, bool))
            for g in spec.groups
        }
        return empty, {}
    if source is None:
        source = OnlineStoreNow(store) if store is not None else _NoSource()
    return _entity_rows(spec, events, logged, source)


def _entity_rows(
    spec: FeatureSpec,
    events: Sequence[Mapping[str, Any]],
    logged: FeatureLogIndex | None,
    source: FeatureSource,
) -> tuple[dict[str, Lookup], dict[str, int]]:
    """Per group, the rows of ``events``: logged where the log has them, else from ``source``."""
    ids = [str(e["event_id"]) for e in events]
    in_log = np.asarray([logged is not None and i in logged for i in ids], dtype=bool)
    rest = [e for e, hit in zip(events, in_log, strict=True) if not hit]
    counts = {k: v for k, v in ((FROM_LOG, int(in_log.sum())), (source.kind, len(rest))) if v}
    if logged is None or not in_log.any():
        return dict(source.as_of(lookup_requests(spec, events), _times(events))), counts
    from_log = logged.lookups([i for i, hit in zip(ids, in_log, strict=True) if hit])
    other = source.as_of(lookup_requests(spec, rest), _times(rest)) if rest else {}
    out = {}
    for g in spec.groups:
        values = np.empty((len(events), g.width), dtype=np.float32)
        found = np.empty(len(events), dtype=bool)
        values[in_log], found[in_log] = from_log[g.name].values, from_log[g.name].found
        if rest:
            values[~in_log], found[~in_log] = other[g.name].values, other[g.name].found
        out[g.name] = Lookup(values, found)
    return out, counts


def _times(events: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.int64]:
    return np.asarray([int(e["event_time"]) for e in events], dtype=np.int64)


def validate(
    ts: TrainingSet, spec: FeatureSpec, max_missing_share: float = 0.2, task: Task = BINARY
) -> ValidationReport:
    """Check a training set before training: size, labels (for the task), duplicates, NaN/inf,
    ranges, coverage.

    >>> from services.features.spec import FeatureSpec
    >>> spec = FeatureSpec.from_dict({"version": "v", "groups": []})
    >>> ts = TrainingSet(np.zeros((0, 11)), np.zeros(0, dtype=np.int64), (), (), {})
    >>> validate(ts, spec).problems
    ('fewer than 200 rows (0)',)
    """
    problems: list[str] = []
    rows = len(ts.y)
    positives = int(ts.y.sum()) if rows and task.kind == "binary" else 0
    if rows < 200:
        return ValidationReport(rows, positives, (f"fewer than 200 rows ({rows})",))
    problems += _label_problems(ts.y, task, positives)
    dupes = rows - len(set(ts.event_ids))
    if dupes:
        problems.append(f"{dupes} duplicate event ids")
    ranges = {f.name: (f.min, f.max) for g in spec.groups for f in g.features}
    for d in spec.context:
        ranges |= dict.fromkeys(d.columns, d.bounds())
    # NaN is allowed only where the spec makes it the default (an unknown value).
    nullable = {c for d in spec.context if math.isnan(d.fill()) for c in d.columns}
    for j, name in enumerate(ts.names):
        col = ts.X[:, j]
        nan = int(np.isnan(col).sum())
        if nan and name not in nullable:
            problems.append(f"{name}: {nan} missing values")
        if np.isinf(col).any():
            problems.append(f"{name}: infinite values")
        lo, hi = ranges.get(name, (-math.inf, math.inf))
        finite = col[np.isfinite(col)]
        outside = int(((finite < lo) | (finite > hi)).sum())
        if outside:
            problems.append(f"{name}: {outside} values outside [{lo}, {hi}]")
    for group, share in ts.missing_share.items():
        if share > max_missing_share:
            problems.append(
                f"{group} features missing for {share:.0%} of rows (limit {max_missing_share:.0%}):"
                " load features first"
            )
    return ValidationReport(rows, positives, tuple(problems))


def _label_problems(y: npt.NDArray[Any], task: Task, positives: int) -> list[str]:
    """Labels a model of ``task`` can learn from: both classes (binary), finite values that
    vary (regression), every class (multiclass), at least 20 examples of each class.

    >>> _label_problems(np.array([0, 0, 1, 2] * 10), Task("multiclass", ("a", "b", "c")), 0)
    ['too few examples of a class: a 20, b 10, c 10 of 40']
    """
    rows = len(y)
    if task.kind == "regression":
        bad = int((~np.isfinite(y)).sum())
        said = [f"{bad} labels are not finite numbers"] if bad else []
        if not bad and float(np.ptp(y)) == 0.0:
            said.append("every label has the same value: nothing to learn")
        return said
    if task.kind == "multiclass":
        counts = np.bincount(y.astype(np.int64), minlength=task.width)
        if (counts < 20).any():
            each = ", ".join(f"{c} {n}" for c, n in zip(task.classes, counts.tolist(), strict=True))
            return [f"too few examples of a class: {each} of {rows}"]
        return []
    out: list[str] = []
    if positives < 20 or rows - positives < 20:
        out.append(f"too few examples of a class: {positives} positive of {rows}")
    if set(np.unique(y).tolist()) - {0, 1}:
        out.append("labels must be 0 or 1")
    return out
