"""`streamscore report drift`: a window of served events against the training reference of the
version that served them, as Evidently's data drift and prediction drift page (docs/drift.md).

The window is read with the replay's readers (``ranges_since``/``iter_ranges``, broker time):
events from the input topic, the entity rows they were served with from the feature log, and
the version's scores from the predictions topic. Only served events count: one the worker
refused (a dead letter) or has not scored yet never reached the model (``not_served``). The
model's inputs are assembled with the serving code. Rows the log does not hold (it is off, or
they were never scored) take their entity features from Redis as it is now; ``feature_rows``
in the summary says how many.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
from confluent_kafka import Consumer, Message
from rich.console import Console

from services.codec.factory import codec_for
from services.core.errors import ConfigError, NotFound
from services.core.settings import Settings
from services.drift.reference import read_reference
from services.drift.report import DriftSummary, write_report
from services.features.log import FeatureLogIndex
from services.kafka.config import consumer_config
from services.kafka.ranges import iter_ranges, ranges_since
from services.scoring.registry import MlflowRegistry
from services.training.dataset import build_training_set
from streams.adapters import feature_spec, feature_store
from streams.commands.common import app, emit, json_option, parse_since, table
from streams.topics import by_record

# A prediction and a feature-log record are written when the event's batch is scored, a little
# after the event is stored: both are read until this long after the window's end.
SCORED_SLACK_MS = 5 * 60 * 1000


def _messages(s: Settings, topic: str, since_ms: int, until_ms: int) -> Iterator[Message]:
    """Every message of ``topic`` stored in [since_ms, until_ms), read to the range's end."""
    consumer = Consumer(consumer_config(s, f"streamscore-report-{uuid.uuid4().hex[:8]}"))
    try:
        ranges = ranges_since(consumer, topic, since_ms, until_ms)
        for batch in iter_ranges(consumer, topic, ranges):
            yield from batch
    finally:
        consumer.close()


def _decoded(s: Settings, record: str, topic: str, since: int, until: int) -> list[dict[str, Any]]:
    codec = codec_for(s, by_record(s.topics, record))
    out = []
    for m in _messages(s, topic, since, until):
        value = m.value()
        rec = codec.decode_one(value) if value is not None else None
        if isinstance(rec, dict):
            out.append(rec)
    return out


def drift_report(
    s: Settings, from_ms: int, to_ms: int, out: Path, version: str | None = None
) -> dict[str, Any]:
    """Read the window, build the report at ``out``; returns its summary (JSON-ready).

    Raises:
        NotFound: no such version, the version keeps no reference, or no event in the window.
        ConfigError: Evidently is missing, or the version's inputs are not the spec's.
        BrokerUnavailable, FeatureStoreUnavailable, RegistryUnavailable: a dependency failed.
    """
    registry = MlflowRegistry(s)
    with tempfile.TemporaryDirectory(prefix="streamscore-report-") as tmp:
        try:
            model = registry.load(version=version, keep=Path(tmp)) if version else None
            model = model or registry.load(alias="champion", keep=Path(tmp))
        except ConfigError as exc:
            raise NotFound(str(exc)) from exc
        reference = read_reference(Path(tmp))
    if reference is None:
        raise NotFound(
            f"{model.name} v{model.version} keeps no training reference (registered before "
            "references were kept, or from outside): train a version with `streamscore train`"
        )
    spec = feature_spec(s)
    events_by_id = {
        str(e["event_id"]): e
        for e in _decoded(s, s.topics.event_record, s.topics.events, from_ms, to_ms)
    }
    if not events_by_id:
        raise NotFound(f"no event stored in {s.topics.events} between {from_ms} and {to_ms}")
    until = to_ms + SCORED_SLACK_MS
    logged = None
    if s.features.log:
        records = _decoded(s, "FeatureLog", s.topics.feature_log, from_ms, until)
        logged = FeatureLogIndex(spec, records)
    scores: dict[str, float] = {}
    served: set[str] = set()  # by any version: what the model saw, not the dead letters
    for p in _decoded(s, s.topics.prediction_record, s.topics.predictions, from_ms, until):
        if p["variant"] == "shadow":
            continue
        served.add(str(p["event_id"]))
        if p["model_version"] == model.version:
            scores[str(p["event_id"])] = float(p["score"])
    events = [e for i, e in events_by_id.items() if i in served]
    if not events:
        raise NotFound(
            f"none of the {len(events_by_id):,} events stored in {s.topics.events} between "
            f"{from_ms} and {to_ms} was served (dead letters, or not scored yet)"
        )
    not_served = len(events_by_id) - len(events)
    events_by_id = {str(e["event_id"]): e for e in events}
    store = feature_store(s, spec)
    ts = build_training_set(spec, store, events, dict.fromkeys(events_by_id, True), logged=logged)
    if tuple(ts.names) != reference.names:
        raise ConfigError(
            f"v{model.version} was trained on other inputs than the domain's spec has now: "
            "its reference cannot be compared with this window"
        )
    current_scores = np.array([scores.get(i, np.nan) for i in ts.event_ids], dtype=np.float64)
    summary: DriftSummary = write_report(reference, ts.X, current_scores, out)
    return {
        "model_name": model.name,
        "model_version": model.version,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "out": str(out),
        "feature_rows": dict(ts.sources),
        # Stored in the window but never served (refused as dead letters, or not scored yet):
        # inputs the model did not see, left out.
        "not_served": not_served,
        **summary.to_dict(),
    }


@click.group()
def report() -> None:
    """Reports for people: the drift of a window of served events (Evidently)."""


@report.command("drift")
@click.option("--from", "from_time", required=True, help="From: 30m, 2h, 1d (ago), ms or ISO.")
@click.option("--to", "to_time", default=None, help="Up to (exclusive) [default: now].")
@click.option(
    "--out",
    default="drift-report.html",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML page.",
)
@click.option(
    "--model-version",
    default=None,
    help="Compare with this version's reference [default: the champion].",
)
@json_option
@click.pass_context
def drift(
    ctx: click.Context,
    from_time: str,
    to_time: str | None,
    out: Path,
    model_version: str | None,
) -> None:
    """Evidently's data drift (every model input) and prediction drift (the served score) of
    the events stored from --from to --to, against the training reference of the version (its
    holdout as it scored it), as an HTML page. Needs the extra: pip install
    'streamscore[report]'."""
    a = app(ctx)
    now = int(time.time() * 1000)
    from_ms = parse_since(from_time, now, "--from")
    to_ms = parse_since(to_time, now, "--to") if to_time else now
    if to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    started = time.monotonic()
    with a.err.status("reading the window and building the report"):
        result = drift_report(a.settings, from_ms, to_ms, out, model_version)
    result["seconds"] = round(time.monotonic() - started, 1)
    emit(a, result, lambda c: render(c, result))


def render(c: Console, r: dict[str, Any]) -> None:
    rows = [
        [d["column"], d["method"], f"{d['score']:.4g}", f"{d['threshold']:.3g}", "drifted"]
        for d in r["columns"]
        if d["drifted"]
    ]
    if r["prediction"] is not None:
        p = r["prediction"]
        verdict = "drifted" if p["drifted"] else "stable"
        rows.append(["score", p["method"], f"{p['score']:.4g}", f"{p['threshold']:.3g}", verdict])
    table(c, ("column", "method", "drift score", "threshold", "verdict"), rows, "drift")
    c.print(
        f"{r['model_name']} v{r['model_version']}: {len(r['drifted_columns'])} of "
        f"{len(r['columns'])} inputs drifted; {r['current_rows']:,} events in the window "
        f"({r['scored_rows']:,} scored by v{r['model_version']}; {r['not_served']:,} never "
        f"served, left out) against "
        f"{r['reference_rows']:,} reference rows; report: {r['out']}",
        highlight=False,
    )
