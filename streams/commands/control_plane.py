"""`streamscore worker control-plane`: the faust app of the control plane, with its probes."""

from __future__ import annotations

import logging
import sys

import click
from faust.worker import Worker

from services.core.errors import CredentialsRefused, RedisRefused
from services.kafka.preflight import check_credentials, watch_credentials
from services.redisconn.refusal import watch_refusals
from streams.commands.common import app, exit_now, serves
from streams.control.app import create_app
from streams.probes import serve
from streams.runtime import control_plane_probes

logger = logging.getLogger(__name__)


def _stop_refused(refused: CredentialsRefused | RedisRefused) -> None:
    """The cluster has refused the control plane's CA or password for
    ``kafka.auth_failure_seconds``, or Redis its user or a command for
    ``redis.auth_failure_seconds``: one line, exit 2. faust runs its own loop on the main
    thread, so the process ends here, as a crash would: what it had not committed yet is read
    again by the next start, and its quality book is rebuilt from the labels.

    faust's worker has replaced ``sys.stderr`` with a proxy that logs what is written to it
    (``[WARNING] error: ...``): the line goes to the process's own stderr instead, as the
    other commands' last line does."""
    if sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
    exit_now(f"error: {refused}", 2)


@serves
@click.command("control-plane")
@click.pass_context
def control_plane(ctx: click.Context) -> None:
    """The control plane (faust): label join, drift aggregation, retraining, promotion.

    One instance per model: its topics have one partition, and it keeps the online quality
    book in memory. Stop with SIGTERM/SIGINT."""
    a = app(ctx)
    # A CA or password the cluster refuses stops it before it starts (exit 2, one line);
    # faust would retry for ever. An unreachable cluster is no refusal: faust waits for it.
    refused = check_credentials(a.settings, a.settings.kafka.request_timeout_seconds)
    if refused is not None:
        raise refused
    faust_app, state = create_app(a.settings)
    if a.settings.metrics.enabled:
        m = a.settings.metrics
        try:
            serve(control_plane_probes(a.settings, state), m.host, m.control_plane_port)
        except OSError as exc:
            logger.warning("control plane probe port %d unavailable: %s", m.control_plane_port, exc)
    # While it runs: a password changed or expired since is refused on a new connection.
    watch_credentials(a.settings, _stop_refused)
    # Redis refusing its user or a command (WRONGPASS, NOPERM), as the label join and training
    # reads meet it: the worker's watch and limit.
    watch_refusals(a.settings.redis.auth_failure_seconds, _stop_refused)
    Worker(faust_app, loglevel=a.settings.log.level.lower(), quiet=True).execute_from_commandline()
