"""`streamscore config show`: the effective settings, secrets masked."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.syntax import Syntax

from services.core.settings import env_table_markdown, iter_env_vars, masked
from streams.commands.common import app, emit, json_option


@click.group()
def config() -> None:
    """Inspect configuration (env STREAMSCORE_*, overridden by CLI flags)."""


@config.command("show")
@json_option
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the effective settings with secrets masked."""
    a = app(ctx)
    data = masked(a.settings)

    def render(console: Console) -> None:
        console.print(Syntax(json.dumps(data, indent=2, default=str), "json", theme="ansi_dark"))

    emit(a, data, render)


@config.command("docs")
@click.pass_context
def docs(ctx: click.Context) -> None:
    """Print the Markdown table of every variable (the body of docs/configuration.md); with
    --json, the variables with their defaults and meanings."""
    a = app(ctx)
    data = [
        {
            "variable": name,
            "default": field.get_default(call_default_factory=True),
            "meaning": field.description,
        }
        for name, field in iter_env_vars()
    ]
    emit(a, data, lambda _c: click.echo(env_table_markdown(), nl=False))
