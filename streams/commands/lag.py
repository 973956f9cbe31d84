"""`streamscore lag`: consumer lag per group and partition, from the broker."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from services.kafka.lag import group_lag
from streams.commands.common import app, emit, json_option, table

CONTROL_GROUP = "streamscore-control"


@click.command()
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Consumer group (repeatable) [default: the scoring workers' and the control plane's].",
)
@json_option
@click.pass_context
def lag(ctx: click.Context, groups: tuple[str, ...]) -> None:
    """Committed offsets against the log end, per group and partition, as the broker sees them
    (a table on a terminal, tab-separated lines when piped, JSON with --json)."""
    a = app(ctx)
    wanted = list(groups) or [a.settings.worker.scoring_group, CONTROL_GROUP]
    rows = [r.to_dict() for r in group_lag(a.settings, wanted)]

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
