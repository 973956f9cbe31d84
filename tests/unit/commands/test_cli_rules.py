"""The one-CLI rules (docs/cli.md), walked over every command rather than checked on a few:
help, usage errors, one --json, exit codes, piped output, bad values refused at the edge, and an
unreachable broker, Redis or registry as one line naming its address."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from unittest import mock

import click
import pytest
from click.testing import CliRunner

from streams.cli import cli, main

# A port nothing listens on: connections are refused at once.
NOWHERE = "127.0.0.1:1"


def leaves(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from leaves(command, (*path, name))
        else:
            yield (*path, name)


ALL = sorted(leaves())


def main_in_process(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The console script's ``main`` (its exit code and stderr) with only ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    err = io.StringIO()
    with mock.patch.dict(os.environ, clean | env, clear=True), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


def run(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env=env)


def test_the_walk_sees_every_command() -> None:
    names = {" ".join(p) for p in ALL}
    for expected in (
        "replay run",
        "replay diff",
        "predictions get",
        "tail",
        "produce",
        "lag",
        "topics list",
        "schemas list",
        "models list",
        "dlq redrive",
        "features get",
    ):
        assert expected in names


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_command_has_help_refuses_unknown_flags_and_has_one_json(
    path: tuple[str, ...],
) -> None:
    helped = run(*path, "--help")
    assert helped.exit_code == 0 and helped.output.startswith("Usage: ")
    command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)  # type: ignore[union-attr,assignment]
    serves = getattr(command, "serves", False)
    assert ("--json" in helped.output) != serves, "every result-printing command takes --json"
    wrong = run(*path, "--no-such-flag")
    assert wrong.exit_code == 2 and "No such option" in wrong.output
    if serves:
        refused = run("--json", *path)
        assert refused.exit_code == 2 and "no --json" in refused.output


def test_replay_alone_is_replay_run() -> None:
    dry = run("replay", "--model", "1", "--to", "feed.predictions.v1")
    assert dry.exit_code == 2 and "production topic" in dry.output


def test_piped_tables_are_tab_separated_and_never_cut() -> None:
    listed = run("schemas", "list")
    assert listed.exit_code == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["subject", "record", "id", "fingerprint"]
    assert rows and all(len(r.split("\t")) == 4 for r in rows)
    assert all(r.split("\t")[3].startswith("sha256:") and len(r.split("\t")[3]) == 71 for r in rows)
    topics = run("topics", "list").stdout.splitlines()
    assert topics[0].startswith("topic\tpartitions") and "feed.interactions.v1\t6\t" in topics[1]


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": ""}, ("config", "show"), "BOOTSTRAP_SERVERS"),
        ({"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": "kafka"}, ("config", "show"), "host:port"),
        ({"STREAMSCORE_REDIS__URL": "localhost:6379"}, ("config", "show"), "REDIS__URL"),
        ({"STREAMSCORE_DRIFT__FEATURES": "position"}, ("config", "show"), "DRIFT__FEATURES"),
        ({"STREAMSCORE_LOG__LEVEL": "loud"}, ("config", "show"), "LOG__LEVEL"),
        ({}, ("train", "--events", "-3"), "--events"),
        ({}, ("train", "--holdout", "1.5"), "--holdout"),
        ({}, ("models", "canary", "2", "--percent", "0"), "--percent"),
        ({}, ("tail", "x", "-n", "0"), "-n"),
        ({}, ("replay", "--to", "x", "--offsets", "0:9-3"), "--offsets"),
        ({}, ("replay", "--to", "x", "--from-time", "yesterday"), "--from-time"),
        ({}, ("dlq", "inspect", "--samples", "-1"), "--samples"),
    ],
)
def test_bad_values_are_refused_at_the_edge_naming_what(
    env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    code, err = main_in_process(list(args), env)
    assert code == 2, err
    assert named in err and "Traceback" not in err


def test_log_level_is_accepted_in_any_case() -> None:
    ran = run("config", "show", "--json", env={"STREAMSCORE_LOG__LEVEL": "info"})
    assert ran.exit_code == 0 and json.loads(ran.stdout)["log"]["level"] == "INFO"


UNREACHABLE = [
    ("broker", ("lag",)),
    ("broker", ("tail", "feed.interactions.v1")),
    ("broker", ("dlq", "inspect")),
    ("broker", ("dlq", "redrive")),
    ("broker", ("replay", "--to", "sandbox.x.copy", "--from-time", "1h")),
    ("broker", ("replay", "diff", "x")),
    ("broker", ("produce", "feed.interactions.v1", "--example")),
    ("broker", ("retrain", "--reason", "test")),
    ("broker", ("topics", "create")),
    ("redis", ("features", "get", "user", "u1")),
    ("redis", ("predictions", "get", "e-1")),
    ("registry", ("models", "list")),
]


def test_an_unreachable_dependency_is_one_line_naming_it(tmp_path: Path) -> None:
    """All at once (each waits for its client's timeout): exit 1, one line on stderr naming the
    address, never a traceback, nothing on stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    base |= {"STREAMSCORE_HOME": str(tmp_path)}
    where = {
        "broker": ({"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": NOWHERE}, NOWHERE),
        "redis": ({"STREAMSCORE_REDIS__URL": f"redis://{NOWHERE}/0"}, NOWHERE),
        "registry": ({"STREAMSCORE_MODEL__TRACKING_URI": f"http://{NOWHERE}"}, NOWHERE),
    }
    procs = []
    for kind, args in UNREACHABLE:
        env, _ = where[kind]
        procs.append(
            (
                kind,
                args,
                subprocess.Popen(  # noqa: S603 (our own CLI)
                    [sys.executable, "-m", "streams.cli", *args],
                    env=base | env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    for kind, args, proc in procs:
        out, err = proc.communicate(timeout=180)
        lines = err.strip().splitlines()
        assert proc.returncode == 1, (args, err)
        assert len(lines) == 1, (args, err)
        assert where[kind][1] in lines[0] and "Traceback" not in err, (args, err)
        assert out == "", (args, out)
