"""The `streamscore` command: builds Settings once, configures logging, dispatches subcommands.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import signal
import sys
import threading
import typing
from pathlib import Path
from typing import Any

import click
import pydantic
from pydantic_settings import SettingsError
from rich.console import Console

from services.core.errors import (
    BrokerUnavailable,
    ConfigError,
    FeatureStoreUnavailable,
    NotAuthorized,
    NotFound,
    PublishError,
    RegistryUnavailable,
    SchemaRegistryUnavailable,
    StreamMLError,
)
from services.core.logging import configure_logging
from services.core.settings import Settings, iter_env_vars
from services.kafka.auth import WATCH
from services.kafka.denied import from_error
from services.kafka.preflight import check_credentials
from streams.commands.common import CLIENT_LOGGERS, AppContext, LazyGroup

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
    except SettingsError as exc:  # a list or map variable that is not JSON
        names = [n for n in _json_vars() if n in os.environ and not _is_json(os.environ[n])]
        raise ConfigError(
            "invalid configuration: "
            + "; ".join(
                f'{n}: not JSON (lists and maps are JSON, e.g. \'["a", "b"]\')' for n in names
            )
            if names
            else f"invalid configuration: {exc}"
        ) from exc
    except pydantic.ValidationError as exc:
        lines = [
            f"STREAMSCORE_{'__'.join(str(p).upper() for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from exc


def _json_vars() -> list[str]:
    """The variables whose values are JSON (lists, tuples, maps)."""
    out = []
    for name, field in iter_env_vars():
        origin = typing.get_origin(field.annotation) or field.annotation
        if origin in (list, tuple, dict, set, frozenset):
            out.append(name)
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


COMMANDS = {
    "config": "streams.commands.config:config",
    "topics": "streams.commands.topics:topics",
    "local": "streams.commands.local:local",
    "schemas": "streams.commands.schemas:schemas",
    "domain": "streams.commands.domain:domain",
    "demo": "streams.commands.demo:demo",
    "features": "streams.commands.ml:features",
    "train": "streams.commands.ml:train",
    "retrain": "streams.commands.retrain:retrain",
    "lag": "streams.commands.lag:lag",
    "tail": "streams.commands.tail:tail",
    "produce": "streams.commands.produce:produce",
    "predictions": "streams.commands.predictions:predictions",
    "models": "streams.commands.models:models",
    "worker": "streams.commands.worker:worker",
    "dlq": "streams.commands.dlq:dlq",
    "replay": "streams.commands.replay:replay",
    "api": "streams.commands.api:api",
    "score-file": "streams.commands.score_file:score_file",
    "evaluate-file": "streams.commands.evaluate_file:evaluate_file",
    "report": "streams.commands.report:report",
}
# Commands registered by other installed packages (the benchmarks in `load/` add `load`): the
# entry-point group "streamscore.commands", name -> "module:attr". They sit on top of streams.
PLUGIN_GROUP = "streamscore.commands"


def plugin_commands() -> dict[str, str]:
    """The commands other packages declare through the ``streamscore.commands`` entry points."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS | plugin_commands(),
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    if settings.log.level != "DEBUG":
        # A one-shot command's outcome is its one error line; the clients' own retries and
        # connection errors are detail for --log-level DEBUG (workers log them: `worker`).
        for name in CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    _SETTINGS[:] = [settings]
    _ADDRESSES.update(
        broker=settings.kafka_bootstrap,
        redis=settings.redis_url,
        registry=settings.mlflow_uri,
        schema_registry=settings.schema_registry.url or "",
    )
    ctx.obj = AppContext(
        settings=settings,
        json_output=json_output,
        console=Console(),
        err=Console(stderr=True),
    )


# The addresses in effect, to name in an error line (set by the root command).
_ADDRESSES: dict[str, str] = {}
# The settings in effect, to name the principal a cluster refused (set by the root command).
_SETTINGS: list[Settings] = []


def _refused(exc: StreamMLError) -> NotAuthorized | None:
    """A refusal by the cluster's authorizer inside another error: the line that names it."""
    if isinstance(exc, NotAuthorized) or not _SETTINGS:
        return None
    return from_error(_SETTINGS[0], str(exc), exc.stage, exc.topic)


# How long a command that could not reach a secured cluster asks it again, to tell a refused CA
# or password from an outage (a refused handshake answers within milliseconds).
CREDENTIALS_CHECK_SECONDS = 5.0


def _credentials_refused() -> NotAuthorized | None:
    """After a command could not reach a secured cluster: the refusal of its CA or credentials
    its own clients met, else what a new connection meets now; None for an outage."""
    if not _SETTINGS or _SETTINGS[0].kafka.security_protocol == "PLAINTEXT":
        return None
    s = _SETTINGS[0]
    seen = WATCH.verdict(s, seconds=0)
    if seen is not None:
        return seen
    return check_credentials(s, min(CREDENTIALS_CHECK_SECONDS, s.kafka.request_timeout_seconds))


def _where(exc: StreamMLError) -> str:
    """`` [broker host:port]`` (or Redis, registry) when the message does not name it."""
    kinds: dict[type[StreamMLError], str] = {
        BrokerUnavailable: "broker",
        PublishError: "broker",
        FeatureStoreUnavailable: "redis",
        RegistryUnavailable: "registry",
        SchemaRegistryUnavailable: "schema_registry",
    }
    kind = kinds.get(type(exc))
    address = _ADDRESSES.get(kind or "", "")
    if kind is None or not address or address in str(exc):
        return ""
    if kind == "redis":
        address = address.split("@")[-1]  # never a password
    return f" [{kind.replace('_', ' ')} {address}]"


def _stop_while_starting(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps errors to exit codes (docs/cli.md), one line on
    stderr: 0 ok, 1 failed (a dependency unreachable included), 2 usage or configuration,
    3 not found. A traceback only with --log-level DEBUG.

    Until a command installs its own (the worker finishes its batch, flushes and commits), a
    SIGTERM ends the process at once with 0: an orchestrator stopping a process that is still
    starting (importing, loading its model) has nothing to wait for, and gets no error."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # (tests call main on threads)
        previous = signal.signal(signal.SIGTERM, _stop_while_starting)
    try:
        _main(argv)
    finally:  # called in-process (tests): the caller's handler back, unless a command set one
        if previous is not None and signal.getsignal(signal.SIGTERM) is _stop_while_starting:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> None:
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
    except (BrokerUnavailable, PublishError) as exc:
        refused = _refused(exc) or _credentials_refused()
        sys.stderr.write(f"error: {refused or exc}{'' if refused else _where(exc)}\n")
        sys.exit(2 if refused else 1)
    except NotFound as exc:
        sys.stderr.write(f"not found: {exc}\n")
        sys.exit(3)
    except StreamMLError as exc:
        sys.stderr.write(f"error: {exc}{_where(exc)}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:  # anything else is still one line (the traceback at DEBUG)
        logger.debug("unexpected error", exc_info=True)
        text = str(exc).replace("\n", " ")[:500]
        sys.stderr.write(f"error: {type(exc).__name__}: {text}\n")
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
