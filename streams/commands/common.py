"""What every subcommand shares: the settings built once, the --json switch, output helpers."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from services.core.settings import Settings

# Loggers of the clients we use (Kafka, HTTP to the registry): one-shot commands keep them for
# --log-level DEBUG, workers log them at their level.
CLIENT_LOGGERS = ("librdkafka", "urllib3")

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=click.Command)


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


def table(
    c: Console,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    right: Sequence[str] = (),
) -> None:
    """Rows for a person on a terminal (a table); tab-separated lines with a header when stdout
    is piped, never cut to the terminal's width (``schemas list | cut -f1``)."""
    if not sys.stdout.isatty():
        out = ["\t".join(columns)]
        out += ["\t".join("" if v is None else str(v) for v in row) for row in rows]
        sys.stdout.write("\n".join(out) + "\n")
        return
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    c.print(t)


def add_json(command: click.Command) -> click.Command:
    """``--json`` on every leaf of ``command`` (one flag, one meaning, wherever it is put:
    ``streamscore --json lag`` and ``streamscore lag --json`` are the same); and no negative
    number where a command declared a plain int or float."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_json(sub)
    else:
        for p in command.params:  # numbers are never negative unless a command says so
            if isinstance(p, click.Option) and p.type is click.INT:
                p.type = click.IntRange(min=0)
            elif isinstance(p, click.Option) and p.type is click.FLOAT:
                p.type = click.FloatRange(min=0)
        if not getattr(command, "serves", False) and not any(
            p.name == "json_flag" for p in command.params
        ):
            json_option(command)
    return command


def serves(command: C) -> C:
    """Marks a command that runs a server until stopped: it has no result to print, so no
    ``--json`` (the global one is refused for it)."""
    command.serves = True  # type: ignore[attr-defined]
    inner = command.callback
    assert inner is not None  # noqa: S101 (a leaf command has a callback)

    @functools.wraps(inner)
    def callback(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if app(ctx).json_output:
            raise click.UsageError(f"{ctx.command_path} runs until stopped; it has no --json")
        return inner(*args, **kwargs)

    command.callback = callback
    return command


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


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs: `local up` should not pay for
    scikit-learn, LightGBM and MLflow (about 4 s of imports)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return add_json(command)


def exit_now(line: str, code: int) -> NoReturn:
    """Write ``line`` to stderr and end the process at once, with ``code``, skipping the
    interpreter's exit: for a process whose Kafka clients are still retrying TLS handshakes
    the cluster refuses (the worker's and the control plane's stop on refused credentials).
    A normal exit runs OpenSSL's exit-time cleanup under those threads, which crashed one such
    worker (exit -11 after its line, in tests/faults/test_cluster.py::test_changed_password).
    The caller has flushed, committed and left its group already."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(code)
