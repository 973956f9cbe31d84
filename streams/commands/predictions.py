"""`streamscore predictions get EVENT_ID`: what was served for one event, and why."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import click
from confluent_kafka import Consumer
from rich.console import Console

from services.codec.factory import codec_for
from services.core.errors import NotFound
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.ranges import iter_ranges, ranges_since
from services.labels.store import Stored
from streams.adapters import feature_spec, feature_store, prediction_store
from streams.commands.common import app, emit, parse_since
from streams.topics import by_record


@click.group()
def predictions() -> None:
    """Predictions that were served."""


def find(
    settings: Settings, topic: str, record: str, since_ms: int, match: Callable[[Any], bool]
) -> tuple[dict[str, Any], str] | None:
    """The last record of ``topic`` from ``since_ms`` to the end that ``match`` accepts, with
    where it is (``topic partition:offset``)."""
    codec = codec_for(settings, by_record(settings.topics, record))
    consumer = Consumer(consumer_config(settings, f"streamscore-find-{uuid.uuid4().hex[:8]}"))
    hit: tuple[dict[str, Any], str] | None = None
    try:
        for batch in iter_ranges(consumer, topic, ranges_since(consumer, topic, since_ms)):
            for m in batch:
                rec = codec.decode_one(m.value())
                if isinstance(rec, dict) and match(rec):
                    hit = (rec, f"{topic} {m.partition()}:{m.offset()}")
    finally:
        consumer.close()
    return hit


@predictions.command("get")
@click.argument("event_id")
@click.option(
    "--since",
    default="1h",
    show_default=True,
    help="Search the predictions topic from this time (30m, 2h, 1d, ms or ISO) when the "
    "prediction store does not hold the event, or for --explain.",
)
@click.option("--explain", is_flag=True, help="Add the features of its entities, as they are now.")
@click.pass_context
def get(ctx: click.Context, event_id: str, since: str, explain: bool) -> None:
    """The prediction served for EVENT_ID: score, version, variant, feature groups missing,
    degraded. The prediction store (Redis, kept for the label horizon) first, then the
    predictions topic from --since. Exit 3 when neither holds it."""
    a = app(ctx)
    s = a.settings
    since_ms = parse_since(since, int(time.time() * 1000))
    stored: Stored | None = prediction_store(s).get_many("served", [event_id])[0]
    result: dict[str, Any] = {"event_id": event_id}
    found = None
    if stored is None or explain:
        found = find(s, s.topics.predictions, s.topics.prediction_record, since_ms, _is(event_id))
    if found is not None:
        rec, where = found
        result |= {
            "score": rec["score"],
            # a multiclass prediction: its top class and every class's probability
            **(
                {"predicted_class": rec["predicted_class"], "probabilities": rec["probabilities"]}
                if rec.get("predicted_class") is not None
                else {}
            ),
            "model_version": rec["model_version"],
            "variant": rec["variant"],
            "degraded": rec["degraded"],
            "missing_features": list(rec["missing_features"]),
            **{name: rec.get(name) for name in feature_spec(s).carry},
            "event_time": rec["event_time"],
            "scored_at": rec["scored_at"],
            "source": where,
        }
    elif stored is not None:
        result |= {
            "score": stored.score,
            "model_version": stored.model_version,
            "variant": stored.variant,
            "degraded": stored.degraded,
            "missing_features": list(stored.missing),
            "source": "prediction store",
        }
    else:
        raise NotFound(
            f"no prediction for event {event_id} in the prediction store or on "
            f"{s.topics.predictions} since {since} ago (widen --since)"
        )
    if explain:
        result["now"] = _explain(s, event_id, result, since_ms)

    def render(c: Console) -> None:
        c.print(
            f"event {event_id}: score {result['score']:.6f} by v{result['model_version']} "
            f"({result['variant']}){', DEGRADED' if result['degraded'] else ''} "
            f"[{result['source']}]",
            highlight=False,
        )
        if result["missing_features"]:
            c.print(f"  features missing (defaults used): {', '.join(result['missing_features'])}")
        now = result.get("now")
        if now:
            c.print("  features NOW (looked up again; they may differ from when it was scored):")
            for group, g in now["groups"].items():
                state = "stored" if g["found"] else "not stored: defaults"
                c.print(f"  {group} {g['key']} ({state})", highlight=False)
                for name, value in g["features"].items():
                    c.print(f"    {name} = {value:g}", highlight=False)
            if now["event"]:
                c.print(f"  the event: {now['event']}", highlight=False)

    emit(a, result, render)


def _is(event_id: str) -> Callable[[Any], bool]:
    return lambda rec: rec.get("event_id") == event_id


def _explain(s: Settings, event_id: str, result: dict[str, Any], since_ms: int) -> dict[str, Any]:
    """The entities' features as the store holds them now, and the input event when the input
    topic still has it. Labelled "now": the score was computed from the values of its time."""
    spec = feature_spec(s)
    event = find(s, s.topics.events, s.topics.event_record, since_ms, _is(event_id))
    source: dict[str, Any] = event[0] if event else result
    keys = {g.name: source.get(g.key_field) for g in spec.groups}
    wanted: dict[str, Sequence[str]] = {g: [str(k)] for g, k in keys.items() if k is not None}
    looked = feature_store(s, spec).get_many(wanted) if wanted else {}
    groups = {}
    for g in spec.groups:
        if g.name not in looked:
            continue
        lookup = looked[g.name]
        groups[g.name] = {
            "key": keys[g.name],
            "found": bool(lookup.found[0]),
            "features": dict(zip(g.names, (float(v) for v in lookup.values[0]), strict=True)),
        }
    return {
        "looked_up_at": int(time.time() * 1000),
        "groups": groups,
        "event": event[0] if event else None,
    }
