"""`streamscore retrain`: ask the control plane for a retrain, as ops (a RetrainRequest)."""

from __future__ import annotations

import getpass
import time

import click
from rich.console import Console

from services.codec.factory import codec_for
from services.core.errors import BrokerUnavailable
from services.retrain.policy import retrain_request
from services.scoring.announce import send_one
from streams.commands.common import app, emit, json_option, parse_since
from streams.topics import by_record


@click.command()
@click.option("--reason", required=True, help="Why (recorded with the request and the model).")
@click.option(
    "--since",
    default=None,
    help="Train on events from this event time: 30m, 2h, 1d (ago), epoch ms or ISO 8601 "
    "[default: STREAMSCORE_RETRAIN__WINDOW_SECONDS ago].",
)
@json_option
@click.pass_context
def retrain(ctx: click.Context, reason: str, since: str | None) -> None:
    """Publish a RetrainRequest; the control plane answers it as it answers drift (waits for
    enough labelled events, trains, gates offline, shadows)."""
    a = app(ctx)
    s = a.settings
    now = int(time.time() * 1000)
    start = parse_since(since, now) if since else None
    if start is not None and start >= now:
        raise click.BadParameter("must be in the past", param_hint="--since")
    request = retrain_request(
        s.model.name,
        None,
        [],
        s.retrain.window_seconds * 1000,
        now,
        f"cli:{getpass.getuser()}",
        reason=f"manual: {reason}",
        window_start_ms=start,
    )
    codec = codec_for(s, by_record(s.topics, "RetrainRequest"))
    problem = send_one(
        s, s.topics.retrain_requests, s.model.name.encode(), codec.encode_one(request)
    )
    if problem is not None:
        raise BrokerUnavailable(
            f"retrain request not sent to {s.topics.retrain_requests} at "
            f"{s.kafka_bootstrap}: {problem}",
            topic=s.topics.retrain_requests,
            stage="publish",
        )

    def render(c: Console) -> None:
        c.print(
            f"retrain request {request['request_id']} sent to {s.topics.retrain_requests}: "
            f"window from {request['window_start']}; the control plane logs its outcome"
        )

    emit(a, request, render)
