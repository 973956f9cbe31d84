"""History from files for `train`, `models register --holdout` and `features load|matrix`:
events and labels checked as the worker checks them, entity feature snapshots with a validity
time, and `features matrix`, the exact matrix the worker would build."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console

from services.codec.table import RowProblem, convert, records_from_rows
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.domain.config import domain_of
from services.features.assemble import assemble, lookup_requests
from services.features.history import VALID_FROM, PointInTime, Snapshots
from services.features.spec import FeatureSpec
from services.training.dataset import entity_rows
from services.validation.rules import validate_many
from streams.adapters import feature_spec
from streams.commands.common import app, emit, json_option
from streams.commands.rows import choose_rows
from streams.files import read_rows

MAX_REPORTED = 20  # row problems listed in a refusal; the count covers them all


def _name(path: Path, row: int, event_id: Any, what: str) -> str:
    """How a refused row is named, everywhere: file, row number (1-based data rows) and id.

    >>> _name(Path("h.csv"), 3, "e-3", "price: not a number")
    'h.csv row 3 (event e-3): price: not a number'
    """
    return (
        f"{path.name} row {row} (event {event_id if event_id not in (None, '') else '?'}): {what}"
    )


def read_history(
    settings: Settings, events_path: Path, labels_path: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Events and labels from files, checked as the worker checks events (the Avro schema, then
    the domain's rules) and labels against the label schema; returns them and the problems,
    each naming its row one way (file, row number, event id)."""
    domain = domain_of(settings)
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    bad = 0
    first = 1
    for chunk in read_rows(events_path):
        said = _event_problems(domain, chunk, first, now, events, events_path)
        first += len(chunk)
        bad += len(said)
        problems += said[: max(0, MAX_REPORTED - len(problems))]
    label = domain.label
    labels: dict[str, Any] = {}
    first = 1
    for chunk in read_rows(labels_path):
        found, wrong = _labels_from_rows(domain.records[label.record], label, chunk, first)
        labels |= found
        bad += len(wrong)
        said = [
            _name(
                labels_path,
                w.row,
                chunk[w.row - first].get(label.join_key),
                f"{w.field}: {w.detail}",
            )
            for w in wrong
        ]
        first += len(chunk)
        problems += said[: max(0, MAX_REPORTED - len(problems))]
    if bad > len(problems):
        problems.append(f"... {bad} invalid rows in all")
    return events, labels, problems


def _event_problems(
    domain: Any,
    chunk: list[dict[str, Any]],
    first: int,
    now: int,
    events: list[dict[str, Any]],
    path: Path,
    id_field: str = "event_id",
) -> list[str]:
    """Check one chunk of event rows; append the good events to ``events``; name the bad."""
    got, wrong = records_from_rows(domain.records[domain.event_record], chunk, first)
    refused_rows = {w.row for w in wrong}
    good_rows = [n for n in range(first, first + len(chunk)) if n not in refused_rows]
    refusals = validate_many(got, domain.rules, now) if got else []
    said = [
        (w.row, _name(path, w.row, chunk[w.row - first].get(id_field), f"{w.field}: {w.detail}"))
        for w in wrong
    ]
    for n, rec, r in zip(good_rows, got, refusals, strict=True):
        if r is None:
            events.append(rec)
        else:
            said.append((n, _name(path, n, rec.get(id_field), f"{r.reason.value}: {r.detail}")))
    return [text for _, text in sorted(said)]


def read_holdout(
    settings: Settings, path: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """A holdout file: events with the label's target as one more column."""
    domain = domain_of(settings)
    target = domain.label.target
    kind = next(
        f["type"]
        for f in domain.records[domain.label.record].source["fields"]
        if f["name"] == target
    )
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    labels: dict[str, Any] = {}
    problems: list[str] = []
    first = 1
    for chunk in read_rows(path):
        for n, row in enumerate(chunk, first):
            try:
                value = convert(kind, row.get(target))
                labels[str(row.get("event_id"))] = bool(value) if kind == "boolean" else value
            except (ValueError, TypeError) as exc:
                problems.append(_name(path, n, row.get("event_id"), f"{target}: {exc}"))
        problems += _event_problems(domain, chunk, first, now, events, path)
        first += len(chunk)
    return events, labels, problems[:MAX_REPORTED]


def _labels_from_rows(
    record: Any, label: Any, rows: list[dict[str, Any]], first: int
) -> tuple[dict[str, Any], list[RowProblem]]:
    """Labels need only their join key and target (a boolean, a number or a class, by the
    task): other label fields may be left out."""
    fields = {f["name"]: f["type"] for f in record.source["fields"]}
    out: dict[str, Any] = {}
    wrong: list[RowProblem] = []
    for n, row in enumerate(rows, first):
        try:
            key = convert(fields[label.join_key], row.get(label.join_key))
        except (ValueError, TypeError) as exc:
            wrong.append(RowProblem(n, label.join_key, str(exc)))
            continue
        try:
            value = convert(fields[label.target], row.get(label.target))
            out[key] = bool(value) if fields[label.target] == "boolean" else value
        except (ValueError, TypeError) as exc:
            wrong.append(RowProblem(n, label.target, str(exc)))
    return out, wrong


# -- entity feature files --------------------------------------------------------------------
EPOCH_MS_FLOOR = 100_000_000_000  # 1973-03-03 in epoch milliseconds; 5138 AD in seconds


def _milliseconds(values: Any, path: Path) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``valid_from`` as epoch milliseconds: numbers as they are, text as ISO-8601 (UTC)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values):
        if values.isna().any():
            raise ConfigError(f"{path}: {VALID_FROM} is empty in some rows")
        out = np.asarray(values, dtype=np.int64)
        if out.size and int(out.max()) < EPOCH_MS_FLOOR:
            # Seconds (or a day count) read as milliseconds would make every snapshot valid
            # since 1970: each event would be served the newest row, silently.
            raise ConfigError(
                f"{path}: {VALID_FROM} must be epoch milliseconds (or ISO-8601 text); "
                f"its largest value {int(out.max())} is before 1973 read as milliseconds"
            )
        return out
    try:
        stamps = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {VALID_FROM}: {exc}") from exc
    if stamps.isna().any():
        raise ConfigError(f"{path}: {VALID_FROM} is empty in some rows")
    # pandas keeps the unit it parsed (microseconds for text since pandas 3, a Parquet column's
    # own unit): convert to milliseconds by unit, never by assuming nanoseconds.
    return np.asarray(stamps.dt.as_unit("ms").astype("int64"), dtype=np.int64)


def read_feature_file(
    path: Path, spec: FeatureSpec, group: str | None = None
) -> tuple[str, Snapshots, bool]:
    """A CSV or Parquet file of one group's entity features: the key column and one column per
    declared feature, and optionally ``valid_from`` (snapshots: several rows per key, each
    valid from its time on). ``group``: the spec's group, else the one whose key column the
    file has. Returns the group, the rows and whether they carried ``valid_from``.

    Raises:
        ConfigError: columns missing, values missing or out of range, duplicate keys without
            ``valid_from``, or no single group matches the file.
    """
    import pandas as pd

    header = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else None
    columns = (
        list(header.columns) if header is not None else list(pd.read_csv(path, nrows=0).columns)
    )
    if group is None:
        matches = [g.name for g in spec.groups if g.key_field in columns]
        if len(matches) != 1:
            raise ConfigError(
                f"{path}: cannot tell its group from the key column ({len(matches)} groups "
                f"match: {matches}); the spec's keys are "
                f"{', '.join(g.key_field for g in spec.groups)}"
            )
        group = matches[0]
    g = spec.group(group)
    # Keys as text: an id such as 007 must not become 7.
    frame = header if header is not None else pd.read_csv(path, dtype={g.key_field: str})
    missing = [c for c in (g.key_field, *g.names) if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing columns {missing} declared by the feature spec")
    values = frame[list(g.names)].to_numpy(dtype=np.float64)
    bad = (
        ~np.isfinite(values)
        | (values < [f.min for f in g.features])
        | (values > [f.max for f in g.features])
    )
    if bad.any():
        rows = sorted({int(i) + 1 for i in np.nonzero(bad)[0].tolist()})[:5]
        raise ConfigError(f"{path}: values missing, non-finite or out of range in rows {rows}")
    keys = frame[g.key_field].astype(str).tolist()
    timed = VALID_FROM in frame.columns
    if timed:
        valid_from = _milliseconds(frame[VALID_FROM], path)
        if len(set(zip(keys, valid_from.tolist(), strict=True))) != len(keys):
            raise ConfigError(f"{path}: two rows for one {g.key_field} and {VALID_FROM}")
    else:
        if len(set(keys)) != len(keys):
            raise ConfigError(
                f"{path}: duplicate keys in {g.key_field} (give {VALID_FROM} for snapshots)"
            )
        valid_from = np.zeros(len(keys), dtype=np.int64)
    return group, Snapshots(keys, valid_from, values.astype(np.float32)), timed


def point_in_time(spec: FeatureSpec, paths: Sequence[Path]) -> PointInTime:
    """The history of every group from snapshot files (one or more per group)."""
    parts: dict[str, list[Snapshots]] = {}
    for path in paths:
        group, snaps, timed = read_feature_file(path, spec)
        if not timed:
            raise ConfigError(f"{path}: a point-in-time file needs a {VALID_FROM} column")
        parts.setdefault(group, []).append(snaps)
    lacking = [g.name for g in spec.groups if g.name not in parts]
    if lacking:
        raise ConfigError(f"no snapshot file for group(s) {', '.join(lacking)}")
    return PointInTime(
        spec,
        {
            name: Snapshots(
                [k for s in got for k in s.keys],
                np.concatenate([s.valid_from for s in got]),
                np.vstack([s.values for s in got]),
            )
            for name, got in parts.items()
        },
    )


def _as_of(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--as-of``: epoch milliseconds or an ISO-8601 time (UTC unless it says)."""
    if value is None:
        return None
    if value.strip().lstrip("-").isdigit():
        return int(value)
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return int(stamp.value // 1_000_000)  # Timestamp.value is nanoseconds, whatever the unit
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"{value}: epoch milliseconds or an ISO-8601 time") from exc


@click.command("matrix")
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV, Parquet or JSON-lines file of events (checked as the worker checks them).",
)
@click.option(
    "--features",
    "feature_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Entity snapshot files with valid_from (one or more per group), joined as of each "
    "event's time for every event: the feature log is then not read, unless --feature-log is "
    "given, and then they serve the events the log lacks.",
)
@click.option(
    "--feature-log",
    "from_log",
    is_flag=True,
    help="The feature log must exist (it is read by default when the domain declares its "
    "topic and no --features are given: each event gets the entity rows it was served with).",
)
@click.option(
    "--features-now",
    is_flag=True,
    help="Events the feature log lacks take their entity features from Redis as it is now, "
    "not as they were served. Prints a warning.",
)
@click.option(
    "--as-of",
    callback=_as_of,
    help="With --features: every event's rows as of this time (epoch ms or ISO-8601) instead "
    "of its own time (the feature log is not read).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet file to write: event_id, then the model's columns in order.",
)
@json_option
@click.pass_context
def features_matrix(
    ctx: click.Context,
    events_path: Path,
    feature_paths: tuple[Path, ...],
    from_log: bool,
    features_now: bool,
    as_of: int | None,
    out_path: Path,
) -> None:
    """Write the exact matrix the scoring worker would build for these events (the same
    assemble code), to train or check a model outside streamscore. Entity rows are chosen as
    `train` chooses them: the feature log's (as served), then snapshot files, then Redis as it
    is now only with --features-now; events none gives a row are left out, counted. It exits 2
    when an event is invalid (the report names each row) or none has a row."""
    import pandas as pd

    a = app(ctx)
    spec = feature_spec(a.settings)
    if as_of is not None and not feature_paths:
        raise click.UsageError("--as-of needs --features snapshot files")
    if as_of is not None and (from_log or features_now):
        raise click.UsageError(
            "--as-of takes every row from the snapshots: not with --feature-log or --features-now"
        )
    domain = domain_of(a.settings)
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    first = 1
    for chunk in read_rows(events_path):
        problems += _event_problems(domain, chunk, first, now, events, events_path)
        first += len(chunk)
    if problems:
        emit(a, {"refused": True, "problems": problems[:MAX_REPORTED]}, _refusal(problems))
        ctx.exit(2)
        return
    source = point_in_time(spec, feature_paths) if feature_paths else None
    report: dict[str, Any] = {}
    if as_of is not None and source is not None:
        times = np.full(len(events), as_of, dtype=np.int64)
        lookups = source.as_of(lookup_requests(spec, events), times)
        counts = {source.kind: len(events)}
    else:
        logged, store = None, None
        if from_log or source is None:
            # The same choice as train's (streams/commands/rows.py): every event counts.
            rows = choose_rows(
                a.settings,
                spec,
                events,
                {str(e["event_id"]): True for e in events},
                a.err,
                require_log=from_log,
                snapshots=source is not None,
                features_now=features_now,
                noun="events",
            )
            events, logged, store, report = rows.events, rows.logged, rows.store, rows.report
        lookups, counts = entity_rows(spec, events, logged, source, store)
    origin = ", ".join(counts) or "none"
    matrix = assemble(spec, events, lookups)
    frame = pd.DataFrame(matrix.values, columns=list(matrix.names))
    frame.insert(0, "event_id", [str(e["event_id"]) for e in events])
    frame.to_parquet(out_path, index=False)
    data = {
        "rows": len(events),
        "columns": list(matrix.names),
        "features_from": origin,
        "feature_rows": counts,
        "spec_version": spec.version,
        "out": str(out_path),
    } | ({"feature_log": report} if report else {})
    said = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in counts.items()) or "none"
    emit(
        a,
        data,
        lambda c: c.print(
            f"wrote {len(events):,} rows x {len(matrix.names)} columns (spec {spec.version}, "
            f"entity features: {said}) to {out_path}",
            highlight=False,
        ),
    )


def _refusal(problems: list[str]) -> Any:
    def render(c: Console) -> None:
        for p in problems[:MAX_REPORTED]:
            c.print(f"[red]refused[/red]: {p}", highlight=False)

    return render
