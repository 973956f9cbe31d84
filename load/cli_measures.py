"""`streamscore load memory|file|rebalance|scale`: the capacity measures beside `load bench`
(issue 29), each on a private embedded stack of its own, rounds interleaved."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from load import bench as b
from load import bench_api, bench_file, bench_memory, bench_rebalance, bench_scale
from services.synthetic.world import World, strip_private
from streams.adapters import feature_spec, redis_client
from streams.api_keys import ApiKeys
from streams.commands.common import app, emit, json_option


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _stamp(result: dict[str, Any], started: float) -> dict[str, Any]:
    """The machine, and its load average at the end (other processes share the cores)."""
    return result | {
        "machine": b.machine(),
        "load_average_end": _load_average(),
        "seconds": round(time.time() - started),
    }


def _write(out: Path | None, name: str, result: dict[str, Any], md: str) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / f"{name}.md").write_text(md, encoding="utf-8")


_out_option = click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write NAME.json and NAME.md here.",
)


def _printer(a: Any) -> Callable[[str], None]:
    return lambda what: a.err.print(f"[dim]{what}[/dim]")


@click.command("memory")
@click.option("--rounds", default=3, type=click.IntRange(min=1), show_default=True)
@click.option("--no-worker", is_flag=True, help="Only the imports (no stack, no worker).")
@_out_option
@json_option
@click.pass_context
def memory(ctx: click.Context, rounds: int, no_worker: bool, out_dir: Path | None) -> None:
    """Peak RSS of imports in fresh interpreters, and of the worker after one event with and
    without River's package import; rounds interleaved."""
    a = app(ctx)
    started, say = time.time(), _printer(a)
    result: dict[str, Any] = {
        "load_average_start": _load_average(),
        "imports": bench_memory.imports(rounds, say),
    }
    if not no_worker:
        with b.private_stack("kafka", say) as (base, pids):
            env = b.prepare(base, pids, 1000, 0, say)
            result["worker"] = bench_memory.worker_memory(env, rounds, say)
    result = _stamp(result, started)
    md = bench_memory.markdown(result)
    _write(out_dir, "memory", result, md)
    emit(a, result, lambda c: c.print(md))


def api_capacity(
    a: Any, seconds: float, steps: int, bound_ms: float, port: int, out_dir: Path | None
) -> None:
    """`load api --capacity`: on a private stack, requests/s of one API process at p99 within
    ``bound_ms``, one event and 100 events a request."""
    started, say = time.time(), _printer(a)
    load_start = _load_average()
    with b.private_stack("kafka", say) as (base, pids):
        env = b.prepare(base, pids, 1000, 0, say)
        s = env.settings
        _, key = ApiKeys(redis_client(s), s.redis.key_prefix).create(
            "load-api", rate_per_second=1e9, burst=10**9
        )
        first = 90_000_000  # event times end about now (1 ms apart)
        world = World(feature_spec(s), start_time_ms=int(time.time() * 1000) - first - 4_000)
        events = [strip_private(e) for e in world.events(2000, start_index=first)]
        result = bench_api.capacity(
            s,
            key,
            events,
            {"single": (200.0, 3000.0), "batch": (20.0, 300.0)},
            seconds=seconds,
            steps=steps,
            bound_ms=bound_ms,
            port=port,
            tick=say,
        )
    result = _stamp(result | {"load_average_start": load_start}, started)
    md = bench_api.capacity_markdown(result)
    _write(out_dir, "api-capacity", result, md)
    emit(a, result, lambda c: c.print(md))


@click.command("file")
@click.option("--rows", default=100_000, type=click.IntRange(min=1000), show_default=True)
@click.option("--rounds", default=3, type=click.IntRange(min=1), show_default=True)
@_out_option
@json_option
@click.pass_context
def file_bench(ctx: click.Context, rows: int, rounds: int, out_dir: Path | None) -> None:
    """Rows/s of `score-file` against a plain pandas + LightGBM script on the same CSV, model
    and features; rounds interleaved, on a private stack."""
    a = app(ctx)
    started, say = time.time(), _printer(a)
    load_start = _load_average()
    with b.private_stack("kafka", say) as (base, pids):
        env = b.prepare(base, pids, 1000, 0, say)
        result = bench_file.run(env, rows, rounds, say)
    result = _stamp(result | {"load_average_start": load_start}, started)
    md = bench_file.markdown(result)
    _write(out_dir, "file", result, md)
    emit(a, result, lambda c: c.print(md))


@click.command("scale")
@click.option("--events", default=100_000, type=click.IntRange(min=1000), show_default=True)
@click.option("--rounds", default=3, type=click.IntRange(min=1), show_default=True)
@_out_option
@json_option
@click.pass_context
def scale(ctx: click.Context, events: int, rounds: int, out_dir: Path | None) -> None:
    """The worker's CPU µs/event with 1, 2 and 4 processes in one group, backlog mode; rounds
    interleaved, on a private stack."""
    a = app(ctx)
    started, say = time.time(), _printer(a)
    load_start = _load_average()
    with b.private_stack("kafka", say) as (base, pids):
        env = b.prepare(base, pids, events, 0, say)
        result = bench_scale.run(env, rounds, say)
    result = _stamp(result | {"load_average_start": load_start}, started)
    md = bench_scale.markdown(result)
    _write(out_dir, "scale", result, md)
    emit(a, result, lambda c: c.print(md))


@click.command("rebalance")
@click.option("--rounds", default=3, type=click.IntRange(min=1), show_default=True)
@click.option("--rate", default=1000.0, show_default=True, help="Events/s of the generator.")
@click.option("--seconds", default=75.0, show_default=True, help="Generator time per round.")
@click.option("--join-at", default=10.0, show_default=True, help="Second worker starts (s).")
@click.option("--leave-at", default=50.0, show_default=True, help="Second worker leaves (s).")
@_out_option
@json_option
@click.pass_context
def rebalance(
    ctx: click.Context,
    rounds: int,
    rate: float,
    seconds: float,
    join_at: float,
    leave_at: float,
    out_dir: Path | None,
) -> None:
    """How long a worker joining and leaving stops scoring: the classic protocol against
    KIP-848's group.protocol=consumer, rounds interleaved, on a private Apache Kafka stack."""
    if not 0 < join_at < leave_at < seconds:
        raise click.UsageError("need 0 < --join-at < --leave-at < --seconds")
    a = app(ctx)
    started, say = time.time(), _printer(a)
    load_start = _load_average()
    with b.private_stack("kafka", say) as (base, pids):
        env = b.prepare(base, pids, 1000, 0, say)
        result = bench_rebalance.run(env, rounds, rate, seconds, join_at, leave_at, say)
    result = _stamp(result | {"load_average_start": load_start}, started)
    md = bench_rebalance.markdown(result)
    _write(out_dir, "rebalance", result, md)
    emit(a, result, lambda c: c.print(md))


COMMANDS: list[click.Command] = [memory, file_bench, scale, rebalance]
