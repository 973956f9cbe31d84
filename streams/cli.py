"""The `streamscore` command: builds Settings once, configures logging, dispatches subcommands.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import click
import pydantic
from rich.console import Console

from services.core.errors import ConfigError, NotFound, StreamMLError
from services.core.logging import configure_logging
from services.core.settings import Settings
from streams.commands.common import AppContext

logger = logging.getLogger(__name__)


def build_settings(**flags: Any) -> Settings:
    """Settings from env, with CLI flags (when given) taking precedence over env and defaults.

    Raises:
        ConfigError: a value is invalid (names the variable).
    """
    overrides: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        group, _, name = dotted.partition("__")
        if name:
            overrides.setdefault(group, {})[name] = value
        else:
            overrides[group] = value
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        lines = [
            f"STREAMSCORE_{'__'.join(str(p).upper() for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from exc


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
        return command


COMMANDS = {
    "config": "streams.commands.config:config",
    "topics": "streams.commands.topics:topics",
    "local": "streams.commands.local:local",
    "schemas": "streams.commands.schemas:schemas",
    "demo": "streams.commands.demo:demo",
    "features": "streams.commands.ml:features",
    "train": "streams.commands.ml:train",
    "retrain": "streams.commands.retrain:retrain",
    "lag": "streams.commands.lag:lag",
    "tail": "streams.commands.tail:tail",
    "produce": "streams.commands.produce:produce",
    "models": "streams.commands.models:models",
    "worker": "streams.commands.ml:worker",
    "dlq": "streams.commands.dlq:dlq",
    "replay": "streams.commands.replay:replay",
    "load": "streams.commands.load:load",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Overrides STREAMSCORE_LOG__LEVEL.",
)
@click.option("--json", "json_output", is_flag=True, help="Results as JSON on stdout.")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory; overrides STREAMSCORE_HOME.",
)
@click.option(
    "--bootstrap-servers", default=None, help="Overrides STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS."
)
@click.option("--redis-url", default=None, help="Overrides STREAMSCORE_REDIS__URL.")
@click.version_option(package_name="streamscore", prog_name="streamscore")
@click.pass_context
def cli(
    ctx: click.Context,
    log_level: str | None,
    json_output: bool,
    home: Path | None,
    bootstrap_servers: str | None,
    redis_url: str | None,
) -> None:
    """streamscore: streaming ML inference on Kafka, Avro, Redis and MLflow."""
    settings = build_settings(
        home=home,
        kafka__bootstrap_servers=bootstrap_servers,
        redis__url=redis_url,
        log__level=log_level.upper() if log_level else None,
    )
    configure_logging(settings.log)
    ctx.obj = AppContext(
        settings=settings,
        json_output=json_output,
        console=Console(),
        err=Console(stderr=True),
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps our errors to exit codes, one line on stderr."""
    try:
        rc = cli.main(args=argv, prog_name="streamscore", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except NotFound as exc:
        sys.stderr.write(f"not found: {exc}\n")
        sys.exit(3)
    except StreamMLError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
