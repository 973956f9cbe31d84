"""`streamscore topics`: the topic table, and creating it on any cluster."""

from __future__ import annotations

from dataclasses import asdict

import click
from confluent_kafka.admin import AdminClient
from rich.console import Console

from services.kafka.admin import count_brokers, ensure_topics, wait_for_brokers
from services.kafka.config import admin_config
from streams.commands.common import app, emit, json_option, table
from streams.topics import topic_table


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def topics(ctx: click.Context) -> None:
    """The topic table; `topics` alone is `topics list`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@topics.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Print the topic table (name, partitions, key/value codec, role)."""
    a = app(ctx)
    specs = topic_table(a.settings.topics)
    data = [asdict(t) | {"subject": t.subject, "config": dict(t.config)} for t in specs]

    def render(console: Console) -> None:
        columns = ("topic", "partitions", "key", "value", "role")
        rows = [(s.name, s.partitions, s.key, s.value_record, s.role) for s in specs]
        table(console, columns, rows, "streamscore topics", right=("partitions",))

    emit(a, data, render)


@topics.command("create")
@click.option(
    "--wait-brokers",
    type=click.IntRange(min=1),
    help="First wait until the cluster has this many brokers (a deploy's init job: a topic "
    "created while a broker is still joining is placed on the others only).",
)
@click.option(
    "--wait-seconds",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="How long --wait-brokers waits before giving up (exit 1).",
)
@json_option
@click.pass_context
def create(ctx: click.Context, wait_brokers: int | None, wait_seconds: float) -> None:
    """Create missing topics on the configured cluster; check partition counts of existing ones."""
    a = app(ctx)
    admin = AdminClient(admin_config(a.settings))
    timeout = a.settings.kafka.request_timeout_seconds
    if wait_brokers is not None:
        wait_for_brokers(lambda: count_brokers(admin, timeout), wait_brokers, wait_seconds)
    states = ensure_topics(
        admin, topic_table(a.settings.topics), a.settings.kafka.request_timeout_seconds
    )
    data = [asdict(s) for s in states]

    def render(console: Console) -> None:
        for s in states:
            verb = "created" if s.created else "exists "
            console.print(f"{verb} {s.name} ({s.partitions} partitions)")

    emit(a, data, render)
