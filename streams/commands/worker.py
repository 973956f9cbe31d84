"""`streamscore worker scoring` and `worker control-plane` (its own module: faust loads only
for the control plane)."""

from __future__ import annotations

import logging
import signal

import click

from services.core.errors import CredentialsRefused, RedisRefused
from services.embedded.prometheus import register_target
from streams.commands.common import CLIENT_LOGGERS, LazyGroup, app, emit, exit_now, json_option
from streams.probes import serve
from streams.runtime import scoring_worker, worker_probes

logger = logging.getLogger(__name__)


@click.group(cls=LazyGroup, lazy={"control-plane": "streams.commands.control_plane:control_plane"})
def worker() -> None:
    """Stream workers."""
    for name in CLIENT_LOGGERS:  # a worker logs its clients' lines at the configured level
        logging.getLogger(name).setLevel(logging.NOTSET)


@worker.command("scoring")
@click.option("--max-events", type=int, default=None, help="Stop after this many inputs.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@json_option
@click.pass_context
def worker_scoring(ctx: click.Context, max_events: int | None, timeout: float | None) -> None:
    """Score the domain's events into predictions and dead letters until stopped (SIGTERM)."""
    a = app(ctx)
    w = scoring_worker(a.settings)
    signal.signal(signal.SIGTERM, w.request_stop)
    signal.signal(signal.SIGINT, w.request_stop)
    target = None  # this worker's entry for a local Prometheus, removed when it stops
    if a.settings.metrics.enabled:
        m = a.settings.metrics
        try:
            server = serve(worker_probes(a.settings, w), m.host, m.port)
            bound = server.server_address[1]
            logger.info("probes on http://%s:%d (/metrics /healthz /readyz)", m.host, bound)
            target = register_target(a.settings.home, w.worker_id, f"127.0.0.1:{bound}")
        except OSError as exc:
            # A second worker on one host must still score; it just has no endpoints of its own.
            logger.warning(
                "metrics port %d unavailable (%s): this worker serves no /metrics, /healthz or "
                "/readyz; set STREAMSCORE_METRICS__PORT to give each worker its own",
                m.port,
                exc,
            )
    try:
        try:
            summary = w.run(max_events=max_events, idle_timeout=timeout)
        finally:
            if target is not None:
                target.unlink(missing_ok=True)
    except (CredentialsRefused, RedisRefused) as exc:  # flushed, committed, left: one line, exit 2
        exit_now(f"error: {exc}", 2)
    emit(a, summary.to_dict(), lambda c: c.print(summary.to_dict()))
