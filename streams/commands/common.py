"""What every subcommand shares: the settings built once, the --json switch, output helpers."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
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


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now_ms: int, flag: str = "--since") -> int:
    """An event time in ms from ``30m``/``2h``/``1d`` (ago), epoch milliseconds, or ISO 8601.

    >>> parse_since("2h", 10_000_000), parse_since("1700000000000", 0)
    (2800000, 1700000000000)
    >>> parse_since("2025-11-22T08:00:00+00:00", 0)
    1763798400000
    """
    m = _RELATIVE.match(text.strip())
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT[m.group(2)] * 1000)
    if text.strip().isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r}: give 30m, 2h, 1d, epoch milliseconds or ISO 8601", param_hint=flag
        ) from exc
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no time zone", param_hint=flag)
    return int(parsed.timestamp() * 1000)
