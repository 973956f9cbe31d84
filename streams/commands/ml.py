"""`streamscore features load|get`, `train`."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from services.core.errors import ConfigError
from services.core.settings import Settings
from services.domain.config import domain_of
from services.features.history import FeatureSource
from services.features.store import FeatureStore
from services.scoring.registry import MlflowRegistry
from services.synthetic.history import WorldFeatures
from services.training.dataset import ValidationReport
from services.training.pipeline import (
    CalibrationGateRefused,
    TrainingRefused,
    train_and_register,
)
from services.training.train import metrics_line
from streams.adapters import feature_spec, feature_store
from streams.commands.common import app, emit, json_option
from streams.commands.history import (
    features_matrix,
    point_in_time,
    read_feature_file,
    read_history,
)
from streams.commands.rows import NOW_WARNING, choose_rows
from streams.files import format_of

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
    help="CSV or Parquet with a key column and the group's feature columns (see the spec); "
    "with a valid_from column, snapshots of which each key's latest is loaded.",
)
@click.option("--group", help="The feature spec's group of --file [default: by its key column].")
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
    skipped = 0
    if path is not None:
        if group is not None and group not in [g.name for g in spec.groups]:
            raise click.BadParameter(
                f"{group!r}: the spec's groups are {', '.join(g.name for g in spec.groups)}"
            )
        group, snaps, _ = read_feature_file(path, spec, group)
        # Snapshots (valid_from): Redis serves the present, so it keeps each key's latest.
        keys, matrix, skipped = snaps.latest(int(time.time() * 1000))
        loaded[group] = store.put_many(group, keys, matrix)
    else:
        world = make_world(a.settings, seed, entities)
        for g in spec.groups:
            keys, matrix = world.features(g.name)
            loaded[g.name] = store.put_many(g.name, keys, matrix)
    data = {
        "loaded": loaded,
        "not_valid_yet": skipped,
        "spec_version": spec.version,
        "redis": a.settings.redis_url,
    }
    later = f"; {skipped} snapshot rows valid only later left out" if skipped else ""
    emit(
        a,
        data,
        lambda c: c.print(
            f"loaded {', '.join(f'{n} {g}s' for g, n in loaded.items())} "
            f"(spec {spec.version}) into {a.settings.redis_url}{later}"
        ),
    )


features.add_command(features_matrix)


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
@click.option(
    "--features",
    "feature_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With an events file: entity snapshot files with valid_from (one or more per group), "
    "joined as of each event's time for every event: the feature log is then not read, "
    "unless --feature-log is given, and then they serve the events the log lacks.",
)
@click.option(
    "--feature-log",
    "from_log",
    is_flag=True,
    help="With an events file: the feature log must exist (it is read by default when the "
    "domain declares its topic and no --features are given: each event gets the entity rows "
    "it was served with).",
)
@click.option(
    "--features-now",
    is_flag=True,
    help="Events the feature log lacks (or generated events) take their entity features from "
    "Redis as it is now, not as they were served: leakage when features move with the "
    "outcome. Prints a warning.",
)
@click.option("--flavor", type=click.Choice(["lightgbm", "sklearn"]), default="lightgbm")
@click.option(
    "--holdout",
    default=0.2,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    show_default=True,
    help="Holdout share.",
)
@click.option(
    "--holdout-by",
    type=click.Choice(["random", "time"]),
    default="random",
    show_default=True,
    help="random: a random share; time: the newest events (judged on what comes next).",
)
@click.option(
    "--params",
    "params_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON object of LightGBM parameters over the defaults (num_boost_round included).",
)
@click.option("--run-name", help="The MLflow run's name [default: train-<flavor>].")
@click.option(
    "--calibrate",
    type=click.Choice(["isotonic", "sigmoid"]),
    help="Fit a calibration of the scores on a split of its own (20% of the training rows); "
    "the holdout's ECE before and after is recorded.",
)
@json_option
@click.pass_context
def train(
    ctx: click.Context,
    entities: int | None,
    seed: int,
    events_from: int | Path,
    labels_path: Path | None,
    feature_paths: tuple[Path, ...],
    from_log: bool,
    features_now: bool,
    flavor: str,
    holdout: float,
    holdout_by: str,
    params_path: Path | None,
    run_name: str | None,
    calibrate: str | None,
) -> None:
    """Train on history (generated, or files of events and labels), record the run in MLflow,
    and register a new model version (champion when there is none). Invalid rows refuse the
    training with a report naming each (file, row number, event id) and exit 2."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    lgb_params = _read_params(params_path)
    if (feature_paths or from_log) and not isinstance(events_from, Path):
        raise click.UsageError("--features and --feature-log go with an events file")
    source: FeatureSource | None = point_in_time(spec, feature_paths) if feature_paths else None
    logged = None
    store: FeatureStore | None = None
    log_report: dict[str, Any] = {}
    if isinstance(events_from, Path):
        if labels_path is None:
            raise click.UsageError("an events file needs --labels FILE")
        with a.err.status(f"reading {events_from} and {labels_path}..."):
            events, labels, problems = read_history(a.settings, events_from, labels_path)
        params: dict[str, Any] = {"events_file": str(events_from), "events": len(events)}
        if events and not problems and (from_log or source is None):
            # Snapshot files are point in time already: the log is read with them when asked.
            rows = choose_rows(
                a.settings,
                spec,
                events,
                labels,
                a.err,
                require_log=from_log,
                snapshots=source is not None,
                features_now=features_now,
            )
            events, logged, store, log_report = rows.events, rows.logged, rows.store, rows.report
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
        if features_now:
            store = feature_store(a.settings, spec)
            a.err.print(NOW_WARNING.format(n=len(events)), style="yellow", highlight=False)
        else:  # the world's own entity features: what `features load` puts in Redis
            source = WorldFeatures(world, spec)
        params = {"world_entities": entities or "default", "events": n_events}
    try:
        if problems:
            raise TrainingRefused(ValidationReport(len(events), 0, tuple(problems)))
        registry = MlflowRegistry(a.settings)
        champion = None
        ece_margin = a.settings.retrain.ece_margin
        if calibrate is not None and ece_margin is not None:
            # The retrainer's ECE gate: the champion scored on the same holdout rows.
            version = registry.alias_version("champion")
            champion = registry.load(version=version) if version else None
        with a.err.status(f"training {flavor} and recording the run in MLflow..."):
            result = train_and_register(
                registry,
                spec,
                store,
                events,
                labels,
                flavor=flavor,  # type: ignore[arg-type]  # click.Choice guarantees the literal
                seed=seed,
                holdout_share=holdout,
                holdout_newest=holdout_by == "time",
                extra_params=params,
                params=lgb_params,
                run_name=run_name,
                calibrate=calibrate,  # type: ignore[arg-type]  # click.Choice: the literal
                source=source,
                logged=logged,
                task=domain_of(a.settings).task,
                compare_to=champion,
                ece_margin=ece_margin,
            )
    except CalibrationGateRefused as exc:
        said = str(exc)
        emit(a, {"refused": True, "problems": [said]}, lambda c: c.print(said, highlight=False))
        ctx.exit(2)  # the gate refused the model: nothing registered
        return
    except TrainingRefused as exc:
        refused = list(exc.report.problems)

        def render_refusal(c: Console) -> None:
            for p in refused:
                c.print(f"[red]refused[/red]: {p}", highlight=False)

        emit(a, {"refused": True, "problems": refused}, render_refusal)
        ctx.exit(2)  # bad input, not infrastructure (docs/cli.md, exit codes)
        return
    m = result.metrics

    def render(c: Console) -> None:
        c.print(
            f"model {a.settings.model.name} v{result.version} registered "
            f"(run {result.run_id[:8]}){' and made champion' if result.alias_set else ''}"
        )
        positives = f", {result.report.positives:,} positive" if "holdout_auc" in m else ""
        c.print(f"validation: {result.report.rows:,} rows{positives}, no problems")
        rows = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in result.sources.items())
        c.print(f"entity features: {rows}")
        if log_report.get("left_out"):
            c.print(f"left out: {log_report['left_out']:,} labelled events not in the feature log")
        c.print(f"holdout: {metrics_line(m)}")
        if "holdout_ece_uncalibrated" in m:
            c.print(
                f"calibration ({calibrate}): holdout ECE {m['holdout_ece_uncalibrated']:.4f} "
                f"-> {m['holdout_ece']:.4f}"
            )

    emit(a, result.to_dict() | ({"feature_log": log_report} if log_report else {}), render)


def _read_params(path: Path | None) -> dict[str, Any] | None:
    """``--params``: a JSON object of LightGBM parameters."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON file of LightGBM parameters: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object of LightGBM parameters")
    return data


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
