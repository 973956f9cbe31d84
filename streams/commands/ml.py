"""`streamscore features load`, `train`, `worker scoring`."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
from rich.console import Console

from services.core.errors import ConfigError
from services.embedded.prometheus import register_target
from services.features.spec import FeatureSpec
from services.scoring.registry import MlflowRegistry
from services.training.pipeline import TrainingRefused, train_and_register
from streams.commands.common import CLIENT_LOGGERS, app, emit, json_option, serves
from streams.probes import serve
from streams.runtime import (
    control_plane_probes,
    feature_spec,
    feature_store,
    scoring_worker,
    worker_probes,
)

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)
HISTORY_START_INDEX = 50_000_000


def world_options(func: F) -> F:
    """The synthetic world's size and seed; `features load` and `train` must agree on them."""
    func = click.option("--seed", default=42, show_default=True, help="World seed.")(func)
    func = click.option(
        "--items", "n_items", default=2000, type=click.IntRange(min=1), show_default=True
    )(func)
    return click.option(
        "--users", "n_users", default=5000, type=click.IntRange(min=1), show_default=True
    )(func)


def make_world(spec: FeatureSpec, n_users: int, n_items: int, seed: int, **kw: Any) -> Any:
    # The synthetic world is a development tool from load/; only these commands use it.
    from load.world import World

    return World(spec, n_users=n_users, n_items=n_items, seed=seed, **kw)


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
@click.option("--group", type=click.Choice(["user", "item"]), help="Group of --file.")
@json_option
@click.pass_context
def features_load(
    ctx: click.Context, n_users: int, n_items: int, seed: int, path: Path | None, group: str | None
) -> None:
    """Load user/item features from the synthetic world (default) or from a file."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    store = feature_store(a.settings, spec)
    loaded: dict[str, int] = {}
    if path is not None:
        if group is None:
            raise click.UsageError("--file needs --group")
        keys, matrix = _read_feature_file(path, spec, group)
        loaded[group] = store.put_many(group, keys, matrix)
    else:
        world = make_world(spec, n_users, n_items, seed)
        for g in ("user", "item"):
            keys, matrix = world.features(g)
            loaded[g] = store.put_many(g, keys, matrix)
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
    frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
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
@click.command()
@world_options
@click.option(
    "--events",
    "n_events",
    default=40_000,
    type=click.IntRange(min=100),
    show_default=True,
    help="History size.",
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
    n_users: int,
    n_items: int,
    seed: int,
    n_events: int,
    flavor: str,
    holdout: float,
) -> None:
    """Train on generated history (features read from Redis), record the run in MLflow, and
    register a new model version (champion when there is none)."""
    a = app(ctx)
    spec = feature_spec(a.settings)
    world = make_world(
        spec, n_users, n_items, seed, start_time_ms=int(time.time() * 1000) - n_events * 10
    )
    with a.err.status(f"generating {n_events:,} historical events and labels..."):
        # History comes from far past the indexes `demo` and load tests stream, so a model is
        # never evaluated online on the very events it was trained on.
        events = world.events(n_events, start_index=HISTORY_START_INDEX)
        labels = {lab["event_id"]: lab["engaged"] for lab in world.labels(events)}
    with a.err.status(f"training {flavor} and recording the run in MLflow..."):
        try:
            result = train_and_register(
                MlflowRegistry(a.settings),
                spec,
                feature_store(a.settings, spec),
                events,
                labels,
                flavor=flavor,  # type: ignore[arg-type]  # click.Choice guarantees the literal
                seed=seed,
                holdout_share=holdout,
                extra_params={"world_users": n_users, "world_items": n_items, "events": n_events},
            )
        except TrainingRefused as exc:
            problems = list(exc.report.problems)

            def render_refusal(c: Console) -> None:
                for p in problems:
                    c.print(f"[red]refused[/red]: {p}")

            emit(a, {"refused": True, "problems": problems}, render_refusal)
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


# -- worker --------------------------------------------------------------------------------
@click.group()
def worker() -> None:
    """Stream workers."""
    for name in CLIENT_LOGGERS:  # a worker logs its clients' lines at the configured level
        logging.getLogger(name).setLevel(logging.NOTSET)


@worker.command("scoring")
@click.option("--max-events", type=int, default=None, help="Stop after this many inputs.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@json_option
@click.pass_context
def worker_scoring(ctx: click.Context, max_events: int | None, timeout: float | None) -> None:
    """Score interactions into predictions (and dead letters) until stopped (SIGTERM/SIGINT)."""
    a = app(ctx)
    w = scoring_worker(a.settings)
    signal.signal(signal.SIGTERM, w.request_stop)
    signal.signal(signal.SIGINT, w.request_stop)
    target = None  # this worker's entry for a local Prometheus, removed when it stops
    if a.settings.metrics.enabled:
        m = a.settings.metrics
        try:
            server = serve(worker_probes(a.settings, w), m.host, m.port)
            bound = server.server_address[1]
            logger.info("probes on http://%s:%d (/metrics /healthz /readyz)", m.host, bound)
            target = register_target(a.settings.home, w.worker_id, f"127.0.0.1:{bound}")
        except OSError as exc:
            # A second worker on one host must still score; it just has no endpoints of its own.
            logger.warning(
                "metrics port %d unavailable (%s): this worker serves no /metrics, /healthz or "
                "/readyz; set STREAMSCORE_METRICS__PORT to give each worker its own",
                m.port,
                exc,
            )
    try:
        summary = w.run(max_events=max_events, idle_timeout=timeout)
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
    emit(a, summary.to_dict(), lambda c: c.print(summary.to_dict()))


@serves
@worker.command("control-plane")
@click.pass_context
def worker_control_plane(ctx: click.Context) -> None:
    """The control plane (faust): label join, drift aggregation, retraining, promotion.

    One instance per model: its topics have one partition, and it keeps the online quality
    book in memory. Stop with SIGTERM/SIGINT."""
    from faust.worker import Worker

    from streams.control.app import create_app

    a = app(ctx)
    faust_app, state = create_app(a.settings)
    if a.settings.metrics.enabled:
        m = a.settings.metrics
        try:
            serve(control_plane_probes(a.settings, state), m.host, m.control_plane_port)
        except OSError as exc:
            logger.warning("control plane probe port %d unavailable: %s", m.control_plane_port, exc)
    Worker(faust_app, loglevel=a.settings.log.level.lower(), quiet=True).execute_from_commandline()


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
