"""`streamscore worker control-plane`: the faust app of the control plane, with its probes."""

from __future__ import annotations

import logging

import click
from faust.worker import Worker

from streams.commands.common import app, serves
from streams.control.app import create_app
from streams.probes import serve
from streams.runtime import control_plane_probes

logger = logging.getLogger(__name__)


@serves
@click.command("control-plane")
@click.pass_context
def control_plane(ctx: click.Context) -> None:
    """The control plane (faust): label join, drift aggregation, retraining, promotion.

    One instance per model: its topics have one partition, and it keeps the online quality
    book in memory. Stop with SIGTERM/SIGINT."""
    a = app(ctx)
    faust_app, state = create_app(a.settings)
    if a.settings.metrics.enabled:
        m = a.settings.metrics
        try:
            serve(control_plane_probes(a.settings, state), m.host, m.control_plane_port)
        except OSError as exc:
            logger.warning("control plane probe port %d unavailable: %s", m.control_plane_port, exc)
    Worker(faust_app, loglevel=a.settings.log.level.lower(), quiet=True).execute_from_commandline()
