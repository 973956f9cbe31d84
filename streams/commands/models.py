"""`streamscore models list|show|register|promote|rollback|shadow|canary|verify|compare|ui`.

Every change is planned by the pure rules in ``services.scoring.rollout``, verified (the target
version must download, match its sha256 and score), written to the MLflow registry (aliases,
rollout tags, history) and announced on the model-events topic.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from services.codec.factory import codec_for
from services.core.errors import ConfigError, ModelLoadError, NotFound
from services.domain.config import domain_of
from services.kafka.tail import read_tail
from services.scoring.compare import compare_report
from services.scoring.loader import ServingLoader
from services.scoring.operations import apply_change
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import (
    AliasChange,
    RolloutState,
    plan_promote,
    plan_rollback,
    plan_rollout,
)
from services.training.dataset import build_training_set
from services.training.external import register_external
from services.training.train import metrics_line
from streams.adapters import feature_spec
from streams.commands.common import AppContext, app, emit, json_option, serves, table
from streams.commands.history import read_holdout
from streams.commands.rows import choose_rows
from streams.topics import by_record


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


reason_option = click.option(
    "--reason", "-m", required=True, help="Why: recorded in the alias history and the event."
)


@click.group()
def models() -> None:
    """The MLflow Model Registry: versions, aliases, rollouts (shadow, canary), rollback."""


@models.command("list")
@json_option
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Every version with its aliases, holdout figure (the task's: AUC, MAE, or log loss) and
    artifact sha256; and the rollout."""
    a = app(ctx)
    registry = MlflowRegistry(a.settings)
    key = f"holdout_{domain_of(a.settings).task.primary[0]}"
    versions = registry.versions()
    state = registry.rollout_state()
    rows: list[dict[str, Any]] = [
        {
            "version": v.version,
            "aliases": list(v.aliases),
            "run_id": v.run_id,
            "sha256": v.sha256,
            "flavor": v.tags.get("flavor"),
            key: registry.run_metrics(v.run_id).get(key),
            "created": _when(v.created_ms),
        }
        for v in versions
    ]
    data = {"model": registry.name, "rollout": _state_dict(state), "versions": rows}

    def render(c: Console) -> None:
        title = f"model {registry.name} ({a.settings.mlflow_uri}): {state.describe()}"
        columns = ("version", "aliases", "flavor", key, "created", "run", "sha256")
        shown = [
            (
                v["version"],
                ",".join(v["aliases"]),
                v["flavor"] or "",
                f"{v[key]:.4f}" if v[key] is not None else "",
                v["created"][:16],
                v["run_id"] or "",
                v["sha256"] or "",
            )
            for v in rows
        ]
        table(c, columns, shown, title)

    emit(a, data, render)


@models.command("show")
@click.argument("version", required=False)
@click.option("--history", "n_history", default=20, show_default=True, help="History entries.")
@json_option
@click.pass_context
def models_show(ctx: click.Context, version: str | None, n_history: int) -> None:
    """One version (default: the champion): its run, metrics, tags; the rollout and history."""
    a = app(ctx)
    registry = MlflowRegistry(a.settings)
    state = registry.rollout_state()
    version = version or state.champion
    found = [v for v in registry.versions() if v.version == version]
    if not found:
        raise NotFound(f"model {registry.name} has no version {version}")
    v = found[0]
    history = registry.history()[-n_history:]
    metrics = registry.run_metrics(v.run_id)
    data: dict[str, Any] = {
        "model": registry.name,
        "version": v.version,
        "aliases": list(v.aliases),
        "run_id": v.run_id,
        "sha256": v.sha256,
        "tags": v.tags,
        "metrics": metrics,
        "created": _when(v.created_ms),
        "rollout": _state_dict(state),
        "history": [_change_dict(c) for c in history],
    }
    calibrated = "holdout_ece_uncalibrated" in metrics and "holdout_ece" in metrics
    if calibrated:  # the holdout's expected calibration error before and after calibration
        data["calibration"] = {
            "ece_before": metrics["holdout_ece_uncalibrated"],
            "ece_after": metrics["holdout_ece"],
        }

    def render(c: Console) -> None:
        c.print(f"[bold]{registry.name} v{v.version}[/bold] {','.join(v.aliases)}")
        c.print(f"run {v.run_id}, created {data['created']}, sha256 {v.sha256}")
        if calibrated:
            c.print(
                f"calibrated: holdout ECE {metrics['holdout_ece_uncalibrated']:.4f} before, "
                f"{metrics['holdout_ece']:.4f} after"
            )
        for k, val in sorted(metrics.items()):
            c.print(f"  {k} = {val:.4f}")
        c.print(f"rollout: {state.describe()}")
        _render_history(c, history)

    emit(a, data, render)


def _render_history(c: Console, history: list[AliasChange]) -> None:
    if not history:
        c.print("alias history: empty")
        return
    t = Table(title="alias history")
    for col in ("when", "event", "alias", "from", "to", "who", "why"):
        t.add_column(col)
    for h in history:
        t.add_row(
            _when(h.at_ms),
            h.event_type,
            h.alias,
            h.from_version or "",
            h.to_version or "",
            h.actor,
            h.reason,
        )
    c.print(t)


def _state_dict(state: RolloutState) -> dict[str, Any]:
    return {
        "champion": state.champion,
        "challenger": state.challenger,
        "mode": state.mode,
        "canary_percent": state.canary_percent,
        "description": state.describe(),
    }


def _change_dict(change: AliasChange) -> dict[str, Any]:
    return {
        "event_type": change.event_type,
        "alias": change.alias,
        "from_version": change.from_version,
        "to_version": change.to_version,
        "reason": change.reason,
        "actor": change.actor,
        "at": _when(change.at_ms),
        "canary_percent": change.canary_percent,
    }


def _change(
    a: AppContext,
    plan: Callable[[RolloutState, MlflowRegistry], tuple[RolloutState, AliasChange]],
) -> None:
    """Plan, verify the versions the new state serves, write, announce, report."""
    codec = codec_for(a.settings, by_record(a.settings.topics, "ModelEvent"))
    try:
        done = apply_change(a.settings, MlflowRegistry(a.settings), codec, plan)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    before, after, change, problem = done.before, done.after, done.change, done.announce_error
    data = {
        "before": _state_dict(before),
        "after": _state_dict(after),
        "change": _change_dict(change),
        "announced": problem is None,
        "announce_error": problem,
    }

    def render(c: Console) -> None:
        c.print(f"{change.event_type}: {before.describe()}  ->  [bold]{after.describe()}[/bold]")
        if problem is None:
            c.print(f"announced on {a.settings.topics.model_events}")
        else:
            c.print(
                f"[yellow]not announced ({problem})[/yellow]: workers pick the change up "
                f"within {a.settings.model.poll_seconds:g} s by polling the registry"
            )

    emit(a, data, render)


@models.command("promote")
@click.argument("version", required=False)
@reason_option
@json_option
@click.pass_context
def models_promote(ctx: click.Context, version: str | None, reason: str) -> None:
    """Make VERSION (default: the challenger) champion; any rollout ends."""
    now = int(time.time() * 1000)
    _change(app(ctx), lambda s, _r: plan_promote(s, version, reason, _actor(), now))


@models.command("rollback")
@click.option("--to", "version", default=None, help="Version to return to.")
@reason_option
@json_option
@click.pass_context
def models_rollback(ctx: click.Context, version: str | None, reason: str) -> None:
    """Back to the last known good: stop a running shadow/canary, else champion back to the
    previous champion (from the alias history) or to --to."""
    now = int(time.time() * 1000)
    _change(app(ctx), lambda s, r: plan_rollback(s, r.history(), version, reason, _actor(), now))


@models.command("shadow")
@click.argument("version")
@reason_option
@json_option
@click.pass_context
def models_shadow(ctx: click.Context, version: str, reason: str) -> None:
    """Score every event with VERSION too, publishing its predictions as variant=shadow."""
    now = int(time.time() * 1000)
    _change(app(ctx), lambda s, _r: plan_rollout(s, version, "shadow", 0.0, reason, _actor(), now))


@models.command("canary")
@click.argument("version")
@click.option(
    "--percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=10.0,
    show_default=True,
    help="Share of entities (by the domain's key field).",
)
@reason_option
@json_option
@click.pass_context
def models_canary(ctx: click.Context, version: str, percent: float, reason: str) -> None:
    """Serve VERSION to PERCENT of the entities (sticky: by a hash of the domain's key field), the
    champion to the rest."""
    now = int(time.time() * 1000)
    _change(
        app(ctx),
        lambda s, _r: plan_rollout(s, version, "canary", percent, reason, _actor(), now),
    )


@models.command("verify")
@click.argument("versions", nargs=-1)
@json_option
@click.pass_context
def models_verify(ctx: click.Context, versions: tuple[str, ...]) -> None:
    """Download each version (default: all), check its sha256, load and score it. Exit 1 if
    any fails."""
    a = app(ctx)
    registry = MlflowRegistry(a.settings)
    loader = ServingLoader(registry)
    results = []
    for v in versions or tuple(registry.version_numbers()):
        try:
            model = loader.load(v)
            results.append({"version": v, "ok": True, "flavor": model.metadata.flavor})
        except (ModelLoadError, ConfigError) as exc:
            results.append({"version": v, "ok": False, "error": str(exc)})

    def render(c: Console) -> None:
        for r in results:
            mark = "[green]ok[/green]" if r["ok"] else "[red]REFUSED[/red]"
            c.print(f"v{r['version']}: {mark} {r.get('flavor') or r.get('error')}")

    emit(a, results, render)
    if not all(r["ok"] for r in results):
        ctx.exit(1)


@models.command("compare")
@click.option(
    "--last",
    default=5000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Newest messages per partition.",
)
@json_option
@click.pass_context
def models_compare(ctx: click.Context, last: int) -> None:
    """Variants on the live stream: per version and variant, volume, mean score, degraded share
    and (with labels) online AUC/log loss; champion vs shadow agreement."""
    a = app(ctx)
    s = a.settings
    codec = codec_for(s, by_record(s.topics, s.topics.prediction_record))
    label_codec = codec_for(s, by_record(s.topics, s.topics.label_record))
    domain = domain_of(s)
    label = domain.label

    def read(topic: str, c: Any) -> list[dict[str, Any]]:
        out = []
        for m in read_tail(s, topic, last):
            d = c.decode_one(m.value())
            if isinstance(d, dict):
                out.append(d)
        return out

    served = read(s.topics.predictions, codec)
    shadow = read(s.topics.shadow_predictions, codec)
    labels = {d[label.join_key]: d[label.target] for d in read(s.topics.labels, label_codec)}
    report = compare_report(served, shadow, labels, s.model.decision_threshold, domain.task)

    emit(a, report, lambda c: render_compare(c, report, f"the newest {last} per partition"))


# The online quality columns of `models compare`, per task: (report key, column title).
QUALITY_COLUMNS = {
    "binary": (("auc", "AUC"), ("log_loss", "log loss")),
    "regression": (("mae", "MAE"), ("rmse", "RMSE")),
    "multiclass": (("log_loss", "log loss"), ("accuracy", "accuracy")),
}


def render_compare(c: Console, report: dict[str, Any], over: str) -> None:
    """The `models compare` report (also the demo's): variants, then shadow agreement."""
    t = Table(title=f"predictions by version and variant, over {over}")
    for col in ("version", "variant", "events", "mean", "degraded", "labels"):
        t.add_column(col, justify="right")
    quality = QUALITY_COLUMNS[report.get("task", "binary")]
    for _, title in quality:
        t.add_column(title, justify="right")
    for r in report["variants"]:
        t.add_row(
            f"v{r['model_version']}",
            r["variant"],
            f"{r['predictions']:,}",
            f"{r['mean_score']:.4f}",
            f"{r['degraded_share']:.1%}",
            f"{int(r.get('labelled', 0)):,}",
            *(f"{r[key]:.4f}" if key in r else "" for key, _ in quality),
        )
    c.print(t)
    for ag in report["shadow_agreement"]:
        if report.get("task") == "multiclass":
            flips = f", {ag['decision_flips']:,} class changes ({ag['flip_rate']:.2%})"
        elif report["threshold"] is None:
            flips = ""  # regression: no decision to flip
        else:
            flips = (
                f", {ag['decision_flips']:,} decision flips at {report['threshold']:g} "
                f"({ag['flip_rate']:.2%})"
            )
        c.print(
            f"shadow v{ag['shadow_version']} vs served, over {ag['n']:,} events: mean "
            f"|diff| {ag['mean_abs_diff']:.4f}, rank correlation "
            f"{ag['rank_correlation']:.4f}{flips}"
        )
    if not report["shadow_agreement"]:
        c.print("no shadow predictions to compare")


@serves
@models.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
def models_ui(ctx: click.Context, host: str, port: int) -> None:
    """Open MLflow's UI on the registry in use: runs, versions, aliases, rollout tags.

    With the embedded backend this runs `mlflow ui` on its sqlite file (until Ctrl-C); with a
    tracking server it prints the server's address, which already serves the UI."""
    a = app(ctx)
    uri = a.settings.mlflow_uri
    if uri.startswith(("http://", "https://")):
        a.console.print(f"the MLflow UI is served by the tracking server: {uri}")
        return
    a.err.print(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C stops it)")
    os.execv(  # noqa: S606 (replaces this process with mlflow ui; fixed argv, no shell)
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            host,
            "--port",
            str(port),
        ],
    )


@models.command("register")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--holdout",
    "holdout_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV, Parquet or JSON lines of events with the label's target column: the version's "
    "holdout metrics, with features read from Redis as the workers read them.",
)
@click.option(
    "--base-rate",
    type=float,
    help="The fallback ladder's last rung: the share of positives (binary, in [0, 1]) or the "
    "mean (regression) [default: the holdout's].",
)
@click.option(
    "--features-now",
    is_flag=True,
    help="Holdout events the feature log lacks take their entity features from Redis as it "
    "is now, not as they were served (a warning says how many); without it they are left out.",
)
@json_option
@click.pass_context
def models_register(
    ctx: click.Context,
    path: Path,
    holdout_path: Path | None,
    base_rate: float | None,
    features_now: bool,
) -> None:
    """Register a model trained elsewhere: a LightGBM text model (.txt) or scikit-learn saved
    with skops (.skops). Its feature names and order must be the spec's; its sha256 is
    recorded. It becomes champion only when there is none; otherwise shadow, canary and promote
    it like any version."""

    a = app(ctx)
    s = a.settings
    spec = feature_spec(s)
    task = domain_of(s).task
    holdout = None
    log_report: dict[str, Any] = {}
    if holdout_path is not None:
        events, labels, problems = read_holdout(s, holdout_path)
        if problems:
            raise ConfigError(f"{holdout_path.name}: " + "; ".join(problems))
        rows = choose_rows(s, spec, events, labels, a.err, features_now=features_now)
        log_report = rows.report
        ts = build_training_set(
            spec, rows.store, rows.events, labels, logged=rows.logged, task=task
        )
        holdout = (ts.X, ts.y)
    with a.err.status(f"checking {path.name} and recording it in MLflow..."):
        result = register_external(
            MlflowRegistry(s), spec, path, holdout=holdout, base_rate=base_rate, task=task
        )
    data = result.to_dict() | {"model": s.model.name}
    if log_report:
        data["feature_log"] = log_report

    def render(c: Console) -> None:
        c.print(
            f"model {s.model.name} v{result.version} registered from {path.name} "
            f"({result.flavor}, sha256 {result.sha256[:12]}...)"
            f"{' and made champion' if result.champion else ''}"
        )
        if result.metrics:
            m = result.metrics
            c.print(f"holdout: {int(m['holdout_rows'])} rows, {metrics_line(m)}")

    emit(a, data, render)
