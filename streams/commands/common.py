"""What every subcommand shares: the settings built once, the --json switch, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.console import Console

from services.core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """Built once by the root command and handed to every subcommand."""

    settings: Settings
    json_output: bool
    console: Console  # results (stdout)
    err: Console  # progress and diagnostics (stderr)


def app(ctx: click.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    if obj is None:  # pragma: no cover (the root command always sets it)
        raise click.UsageError("internal: no application context")
    return obj


def json_option(func: F) -> F:
    """``--json`` on a leaf command, equivalent to the global ``streamscore --json``."""

    def _set(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            app(ctx).json_output = True
        return value

    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=_set,
        help="Print the result as JSON (for scripts).",
    )(func)


def emit(ctx: AppContext, data: Any, render: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON with --json, else let ``render`` draw it for a person."""
    if ctx.json_output:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render(ctx.console)
