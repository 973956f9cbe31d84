"""`streamscore topics`: the topic table, and creating it on any cluster."""

from __future__ import annotations

from dataclasses import asdict

import click
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from services.kafka.admin import ensure_topics
from services.kafka.config import admin_config
from streams.commands.common import app, emit, json_option
from streams.topics import topic_table


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def topics(ctx: click.Context) -> None:
    """Print the topic table (name, partitions, key/value codec, role)."""
    if ctx.invoked_subcommand is not None:
        return
    a = app(ctx)
    table = topic_table(a.settings.topics)
    data = [asdict(t) | {"subject": t.subject, "config": dict(t.config)} for t in table]

    def render(console: Console) -> None:
        t = Table(title="streamscore topics")
        for col in ("topic", "partitions", "key", "value (Avro)", "role"):
            t.add_column(col, overflow="fold")
        for s in table:
            t.add_row(s.name, str(s.partitions), s.key, s.value_record, s.role)
        console.print(t)

    emit(a, data, render)


@topics.command("create")
@json_option
@click.pass_context
def create(ctx: click.Context) -> None:
    """Create missing topics on the configured cluster; check partition counts of existing ones."""
    a = app(ctx)
    admin = AdminClient(admin_config(a.settings))
    states = ensure_topics(
        admin, topic_table(a.settings.topics), a.settings.kafka.request_timeout_seconds
    )
    data = [asdict(s) for s in states]

    def render(console: Console) -> None:
        for s in states:
            verb = "created" if s.created else "exists "
            console.print(f"{verb} {s.name} ({s.partitions} partitions)")

    emit(a, data, render)
