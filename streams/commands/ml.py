"""`streamscore features load|get`, `train`."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
from rich.console import Console

from services.codec.table import RowProblem, convert, records_from_rows
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.domain.config import domain_of
from services.features.spec import FeatureSpec
from services.scoring.registry import MlflowRegistry
from services.training.dataset import ValidationReport
from services.training.pipeline import TrainingRefused, train_and_register
from services.validation.rules import validate_many
from streams.adapters import feature_spec, feature_store
from streams.commands.common import app, emit, json_option
from streams.files import format_of, read_rows

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)
HISTORY_START_INDEX = 50_000_000


def world_options(func: F) -> F:
    """The synthetic world's size and seed; `features load` and `train` must agree on them."""
    func = click.option("--seed", default=42, show_default=True, help="World seed.")(func)
    return click.option(
        "--entities",
        default=None,
        type=click.IntRange(min=1),
        help="Entities of the synthetic world's first group [default: the generator's].",
    )(func)


def make_world(settings: Settings, seed: int, entities: int | None = None, **kw: Any) -> Any:
    """The domain's synthetic world (its domain.json `generator`: a module with ``make``).

    A development tool: only the commands that generate data use it.
    """
    domain = domain_of(settings)
    if not domain.generator:
        raise ConfigError(
            f"domain {domain.name} declares no generator: load features with "
            "`features load --file` and train with `train --events FILE --labels FILE`"
        )
    module = importlib.import_module(domain.generator)
    return module.make(domain.spec, seed=seed, entities=entities, **kw)


# -- features ------------------------------------------------------------------------------
@click.group()
def features() -> None:
    """Online features in Redis."""


@features.command("load")
@world_options
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or Parquet with a key column and the group's feature columns (see the spec).",
)
@click.option("--group", help="The feature spec's group of --file.")
@json_option
@click.pass_context
def features_load(
    ctx: click.Context, entities: int | None, seed: int, path: Path | None, group: str | None
) -> None:
    """Load entity features from a file (--file, --group) or from the domain's synthetic world
    (every group)."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    store = feature_store(a.settings, spec)
    loaded: dict[str, int] = {}
    if path is not None:
        if group is None:
            raise click.UsageError("--file needs --group")
        known = [g.name for g in spec.groups]
        if group not in known:
            raise click.BadParameter(f"{group!r}: the spec's groups are {', '.join(known)}")
        keys, matrix = _read_feature_file(path, spec, group)
        loaded[group] = store.put_many(group, keys, matrix)
    else:
        world = make_world(a.settings, seed, entities)
        for g in spec.groups:
            keys, matrix = world.features(g.name)
            loaded[g.name] = store.put_many(g.name, keys, matrix)
    data = {"loaded": loaded, "spec_version": spec.version, "redis": a.settings.redis_url}
    emit(
        a,
        data,
        lambda c: c.print(
            f"loaded {', '.join(f'{n} {g}s' for g, n in loaded.items())} "
            f"(spec {spec.version}) into {a.settings.redis_url}"
        ),
    )


def _read_feature_file(path: Path, spec: FeatureSpec, group: str) -> tuple[list[str], Any]:
    import pandas as pd

    g = spec.group(group)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:  # keys as text: an id such as 007 must not become 7
        frame = pd.read_csv(path, dtype={g.key_field: str})
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
        rows = sorted(set(np.nonzero(bad)[0].tolist()))[:5]
        raise ConfigError(f"{path}: values missing, non-finite or out of range in rows {rows}")
    keys = frame[g.key_field].astype(str).tolist()
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{path}: duplicate keys in {g.key_field}")
    return keys, values.astype(np.float32)


# -- train ---------------------------------------------------------------------------------
def _events_arg(ctx: click.Context, param: click.Parameter, value: str) -> int | Path:
    """``--events``: a history size to generate, or a file of events."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        n = int(text)
        if n < 100:
            raise click.BadParameter(f"{n}: generate at least 100 events (or give a file)")
        return n
    path = Path(text)
    format_of(path)
    if not path.is_file():
        raise click.BadParameter(f"{text}: no such file")
    return path


@click.command()
@world_options
@click.option(
    "--events",
    "events_from",
    default="40000",
    show_default=True,
    callback=_events_arg,
    help="History: a number of events to generate from the domain's world, or a CSV, Parquet "
    "or JSON-lines file of events (then give --labels).",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With an events file: a file of labels (the domain's label join key and target).",
)
@click.option("--flavor", type=click.Choice(["lightgbm", "sklearn"]), default="lightgbm")
@click.option(
    "--holdout",
    default=0.2,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    show_default=True,
    help="Holdout share.",
)
@json_option
@click.pass_context
def train(
    ctx: click.Context,
    entities: int | None,
    seed: int,
    events_from: int | Path,
    labels_path: Path | None,
    flavor: str,
    holdout: float,
) -> None:
    """Train on history (generated, or files of events and labels) with features read from
    Redis, record the run in MLflow, and register a new model version (champion when there is
    none). Invalid rows refuse the training, with a report."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    if isinstance(events_from, Path):
        if labels_path is None:
            raise click.UsageError("an events file needs --labels FILE")
        with a.err.status(f"reading {events_from} and {labels_path}..."):
            events, labels, problems = read_history(a.settings, events_from, labels_path)
        params: dict[str, Any] = {"events_file": str(events_from), "events": len(events)}
    else:
        if labels_path is not None:
            raise click.UsageError("--labels goes with an events file")
        n_events = events_from
        world = make_world(
            a.settings, seed, entities, start_time_ms=int(time.time() * 1000) - n_events * 10
        )
        label = domain_of(a.settings).label
        with a.err.status(f"generating {n_events:,} historical events and labels..."):
            # History comes from far past the indexes `demo` and load tests stream, so a model
            # is never evaluated online on the very events it was trained on.
            events = world.events(n_events, start_index=HISTORY_START_INDEX)
            labels = {x[label.join_key]: x[label.target] for x in world.labels(events)}
        problems = []
        params = {"world_entities": entities or "default", "events": n_events}
    try:
        if problems:
            raise TrainingRefused(ValidationReport(len(events), 0, tuple(problems)))
        with a.err.status(f"training {flavor} and recording the run in MLflow..."):
            result = train_and_register(
                MlflowRegistry(a.settings),
                spec,
                feature_store(a.settings, spec),
                events,
                labels,
                flavor=flavor,  # type: ignore[arg-type]  # click.Choice guarantees the literal
                seed=seed,
                holdout_share=holdout,
                extra_params=params,
            )
    except TrainingRefused as exc:
        refused = list(exc.report.problems)

        def render_refusal(c: Console) -> None:
            for p in refused:
                c.print(f"[red]refused[/red]: {p}", highlight=False)

        emit(a, {"refused": True, "problems": refused}, render_refusal)
        ctx.exit(1)
        return
    m = result.metrics

    def render(c: Console) -> None:
        c.print(
            f"model {a.settings.model.name} v{result.version} registered "
            f"(run {result.run_id[:8]}){' and made champion' if result.alias_set else ''}"
        )
        c.print(
            f"validation: {result.report.rows:,} rows, {result.report.positives:,} positive, "
            "no problems"
        )
        c.print(
            f"holdout: AUC {m['holdout_auc']:.4f}, log loss {m['holdout_log_loss']:.4f}, "
            f"ECE {m['holdout_ece']:.4f}, base rate {m['holdout_base_rate']:.3f}"
        )

    emit(a, result.to_dict(), render)


MAX_REPORTED = 20  # row problems listed in a refusal; the count covers them all


def read_history(
    settings: Settings, events_path: Path, labels_path: Path
) -> tuple[list[dict[str, Any]], dict[str, bool], list[str]]:
    """Events and labels from files, checked as the worker checks events (the Avro schema, then
    the domain's rules) and labels against the label schema; returns them and the problems."""
    domain = domain_of(settings)
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    bad = 0
    first = 1
    for chunk in read_rows(events_path):
        got, wrong = records_from_rows(domain.records[domain.event_record], chunk, first)
        first += len(chunk)
        refusals = validate_many(got, domain.rules, now) if got else []
        said = [str(w) for w in wrong] + [
            f"event {rec['event_id']}: {r.reason.value}: {r.detail}"
            for rec, r in zip(got, refusals, strict=True)
            if r is not None
        ]
        events += [rec for rec, r in zip(got, refusals, strict=True) if r is None]
        bad += len(said)
        problems += [f"{events_path.name}: {w}" for w in said[: MAX_REPORTED - len(problems)]]
    label = domain.label
    labels: dict[str, bool] = {}
    first = 1
    for chunk in read_rows(labels_path):
        found, wrong = _labels_from_rows(domain.records[label.record], label, chunk, first)
        first += len(chunk)
        labels |= found
        bad += len(wrong)
        problems += [f"{labels_path.name}: {w}" for w in wrong[: MAX_REPORTED - len(problems)]]
    if bad > len(problems):
        problems.append(f"... {bad} invalid rows in all")
    return events, labels, problems


def read_holdout(
    settings: Settings, path: Path
) -> tuple[list[dict[str, Any]], dict[str, bool], list[str]]:
    """A holdout file: events with the label's target as one more column."""
    domain = domain_of(settings)
    target = domain.label.target
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    labels: dict[str, bool] = {}
    problems: list[str] = []
    first = 1
    for chunk in read_rows(path):
        for n, row in enumerate(chunk, first):
            try:
                labels[str(row.get("event_id"))] = bool(convert("boolean", row.get(target)))
            except (ValueError, TypeError) as exc:
                problems.append(f"row {n}: {target}: {exc}")
        got, wrong = records_from_rows(domain.records[domain.event_record], chunk, first)
        first += len(chunk)
        problems += [str(w) for w in wrong]
        refusals = validate_many(got, domain.rules, now) if got else []
        problems += [
            f"event {e['event_id']}: {r.reason.value}: {r.detail}"
            for e, r in zip(got, refusals, strict=True)
            if r is not None
        ]
        events += got
    return events, labels, problems[:MAX_REPORTED]


def _labels_from_rows(
    record: Any, label: Any, rows: list[dict[str, Any]], first: int
) -> tuple[dict[str, bool], list[RowProblem]]:
    """Labels need only their join key and target: other label fields may be left out."""
    fields = {f["name"]: f["type"] for f in record.source["fields"]}
    out: dict[str, bool] = {}
    wrong: list[RowProblem] = []
    for n, row in enumerate(rows, first):
        try:
            key = convert(fields[label.join_key], row.get(label.join_key))
        except (ValueError, TypeError) as exc:
            wrong.append(RowProblem(n, label.join_key, str(exc)))
            continue
        try:
            out[key] = bool(convert(fields[label.target], row.get(label.target)))
        except (ValueError, TypeError) as exc:
            wrong.append(RowProblem(n, label.target, str(exc)))
    return out, wrong


@features.command("get")
@click.argument("group")
@click.argument("key")
@json_option
@click.pass_context
def features_get(ctx: click.Context, group: str, key: str) -> None:
    """The features stored for one entity (GROUP from the feature spec, KEY its id): each
    value, or the spec's default when the entity has none (exit 3)."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    known = [g.name for g in spec.groups]
    if group not in known:
        raise click.BadParameter(f"{group!r}: the spec's groups are {', '.join(known)}")
    g = spec.group(group)
    lookup = feature_store(a.settings, spec).get_many({group: [key]})[group]
    found = bool(lookup.found[0])
    values = {n: float(v) for n, v in zip(g.names, lookup.values[0].tolist(), strict=True)}
    result = {"group": group, "key": key, "found": found, "features": values}

    def render(c: Console) -> None:
        c.print(f"{group} {key}: " + ("stored" if found else "not stored: the spec's defaults"))
        for n, v in values.items():
            c.print(f"  {n} = {v:g}")

    emit(a, result, render)
    if not found:
        ctx.exit(3)
