"""`streamscore domain show`: the domain in effect, checked, as the workers will serve it."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from services.domain.config import domain_of
from services.features.assemble import feature_names
from streams.commands.common import app, emit, json_option


@click.group()
def domain() -> None:
    """The domain folder: events, features, rules, labels, topics (docs/adapting.md)."""


@domain.command("show")
@json_option
@click.pass_context
def domain_show(ctx: click.Context) -> None:
    """Load and check the domain folder (exit 2 naming the part that does not agree), then
    show its records, keys, label, topics and the model's feature columns in order."""
    a = app(ctx)
    s = a.settings
    d = domain_of(s)
    t = s.topics
    data: dict[str, Any] = {
        "name": d.name,
        "folder": str(d.folder),
        "event": d.event_record,
        "prediction": d.prediction_record,
        "task": d.task.kind,
        "classes": list(d.task.classes),
        "key_field": d.key_field,
        "carry": list(d.spec.carry),
        "label": {"record": d.label.record, "join_key": d.label.join_key, "target": d.label.target},
        "topics": {
            "events": t.events,
            "predictions": t.predictions,
            "shadow_predictions": t.shadow_predictions,
            "labels": t.labels,
        },
        "model": s.model.name,
        "feature_spec": d.spec.version,
        "groups": {g.name: g.key_field for g in d.spec.groups},
        "features": list(feature_names(d.spec)),
        "drift_features": list(s.drift.features),
        "generator": d.generator,
    }

    def render(c: Console) -> None:
        c.print(f"domain {d.name} ({d.folder}): OK", highlight=False)
        c.print(f"  task {d.task.describe()}")
        c.print(f"  events {d.event_record} on {t.events}, keyed by {d.key_field}")
        carry = ", ".join(d.spec.carry)
        c.print(f"  predictions {d.prediction_record} on {t.predictions}, carrying {carry}")
        c.print(
            f"  labels {d.label.record} on {t.labels}: {d.label.target}, joined on "
            f"{d.label.join_key}"
        )
        c.print(f"  model {s.model.name}, feature spec {d.spec.version}:")
        for i, name in enumerate(data["features"]):
            c.print(f"    {i:3d} {name}", highlight=False)

    emit(a, data, render)
