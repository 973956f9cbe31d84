"""`streamscore lag`: consumer lag per group and partition, from the broker."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from services.kafka.lag import group_lag, topic_rates
from streams.commands.common import app, emit, json_option, table

CONTROL_GROUP = "streamscore-control"


@click.command()
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Consumer group (repeatable) [default: the scoring workers' and the control plane's].",
)
@click.option(
    "--by-topic",
    is_flag=True,
    help="Per topic the groups read: messages held and log-end growth per second.",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1, 60),
    help="Seconds between the two readings a rate comes from (--by-topic).",
)
@json_option
@click.pass_context
def lag(ctx: click.Context, groups: tuple[str, ...], by_topic: bool, interval: float) -> None:
    """Committed offsets against the log end, per group and partition, as the broker sees them
    (a table on a terminal, tab-separated lines when piped, JSON with --json). --by-topic: per
    topic, the messages it holds, how fast it grows and the groups' total lag."""
    a = app(ctx)
    wanted = list(groups) or [a.settings.worker.scoring_group, CONTROL_GROUP]
    rows = [r.to_dict() for r in group_lag(a.settings, wanted)]
    if by_topic:
        names = sorted({r["topic"] for r in rows})
        rates = [
            t.to_dict() | {"lag": sum(r["lag"] for r in rows if r["topic"] == t.topic)}
            for t in topic_rates(a.settings, names, interval)
        ]
        columns = ("topic", "partitions", "messages", "per_second", "lag")

        def per_topic(c: Console) -> None:
            shown = [
                [*(t[k] for k in columns[:3]), f"{t['per_second']:.1f}", t["lag"]] for t in rates
            ]
            table(c, columns, shown, "topics", right=columns[1:])

        emit(a, rates, per_topic)
        return

    def render(c: Console) -> None:
        columns = ("group", "topic", "partition", "committed", "log_end", "lag")
        shown = [[r[k] for k in columns] for r in rows]
        table(c, columns, shown, f"consumer lag ({', '.join(wanted)})", right=columns[2:])
        if not sys.stdout.isatty():
            return
        for g in wanted:
            total = sum(r["lag"] for r in rows if r["group"] == g)
            c.print(
                f"{g}: {total:,} behind"
                if any(r["group"] == g for r in rows)
                else f"{g}: no commits"
            )

    emit(a, rows, render)
