"""`streamscore api serve` and `streamscore api keys create|list|revoke`."""

from __future__ import annotations

import logging
import os

import click
from rich.console import Console

from services.core.errors import NotFound
from services.core.settings import to_env
from streams.adapters import redis_client
from streams.api_keys import ApiKeys
from streams.commands.common import app, emit, json_option, serves, table

logger = logging.getLogger(__name__)


@click.group()
def api() -> None:
    """The HTTP API: events in, predictions now (docs/clients.md)."""


@serves
@api.command("serve")
@click.option("--host", help="Address to bind [default: STREAMSCORE_API__HOST].")
@click.option("--port", type=click.IntRange(0, 65535), help="[default: STREAMSCORE_API__PORT]")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Server processes, each with its own model copy [default: STREAMSCORE_API__WORKERS].",
)
@click.pass_context
def api_serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the API (uvicorn) until stopped: POST /v1/events, POST /v1/predict, /healthz,
    /readyz, /metrics, and the OpenAPI document at /docs and /openapi.json."""

    import uvicorn

    a = app(ctx)
    s = a.settings
    host, port, workers = host or s.api.host, port if port is not None else s.api.port, workers
    workers = workers or s.api.workers
    os.environ.update(to_env(s))  # each worker process builds its app from these settings
    logger.info(
        "API on http://%s:%d (%d process%s)", host, port, workers, "es"[: 2 * (workers > 1)]
    )
    uvicorn.run(
        "streams.api:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,  # request lines carry no payloads, but /metrics counts them anyway
    )


@api.group("keys")
def keys() -> None:
    """API keys (stored hashed in Redis; the token is shown once)."""


def _keys(ctx: click.Context) -> ApiKeys:

    s = app(ctx).settings
    return ApiKeys(redis_client(s), s.redis.key_prefix)


@keys.command("create")
@click.argument("name")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Events per second [default: the stream's per-producer rate].",
)
@click.option(
    "--burst", type=click.IntRange(min=0), default=0, help="Bucket size [default: ditto]."
)
@json_option
@click.pass_context
def keys_create(ctx: click.Context, name: str, rate: float, burst: int) -> None:
    """Create a key for NAME; prints the token once (only its hash is kept)."""
    key, token = _keys(ctx).create(name, rate, burst)
    data = key.to_dict() | {"token": token}
    emit(app(ctx), data, lambda c: c.print(f"key {key.id} for {name}: {token}", highlight=False))


@keys.command("list")
@json_option
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key: id, name, created, rate, revoked (never the token)."""
    found = _keys(ctx).list()
    rows = [k.to_dict() for k in found]

    def render(c: Console) -> None:
        cols = ["id", "name", "created_at", "rate_per_second", "burst", "revoked"]
        table(c, cols, [[r[k] for k in cols] for r in rows])

    emit(app(ctx), rows, render)


@keys.command("revoke")
@click.argument("key_id")
@json_option
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke KEY_ID at once: its next request gets 401 (exit 3 if there is no such key)."""
    if not _keys(ctx).revoke(key_id):
        raise NotFound(f"no API key {key_id}")
    emit(app(ctx), {"revoked": key_id}, lambda c: c.print(f"revoked {key_id}"))
