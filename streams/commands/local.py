"""`streamscore local up | down | status | fetch-kafka`: the embedded broker and Redis."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from services.embedded.kafka import fetch_jars, jars_version
from services.embedded.stack import BrokerChoice, EmbeddedStack, StackStatus
from streams.commands.common import app, emit, json_option
from streams.topics import topic_table

DEFAULT_POM = Path("deploy/kafka/pom.xml")


@click.group()
def local() -> None:
    """Run the embedded stack (Kafka-protocol broker + Redis) on loopback."""


def _render_status(status: StackStatus, console: Console, after_up: bool = True) -> None:
    t = Table(title=f"embedded stack ({'healthy' if status.healthy else 'NOT healthy'})")
    for col in ("service", "kind", "address", "pid", "state"):
        t.add_column(col)
    for c in status.components:
        t.add_row(c.name, c.kind, c.address, str(c.pid or "-"), c.detail)
    console.print(t)
    console.print(summary(status, after_up), highlight=False)
    if status.topics:
        console.print(
            "topics: " + ", ".join(f"{k} ({v})" for k, v in sorted(status.topics.items()))
        )
    # The embedded stack's own addresses: pasted into another shell they keep it embedded
    # (Settings.external_kafka and external_redis are false for them).
    console.print(f"export STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS={status.bootstrap_servers}")
    console.print(f"export STREAMSCORE_REDIS__URL={status.redis_url}")


def summary(status: StackStatus, after_up: bool) -> str:
    """What runs (with its kind and pid), what `up` started, and what does not run.

    >>> from services.embedded.stack import ComponentStatus as C
    >>> kafka = C("broker", "kafka", "127.0.0.1:1", True, 11, True, True)
    >>> redis = C("redis", "redis", "redis://127.0.0.1:2/0", True, 12, True, True)
    >>> st = StackStatus("kafka", "127.0.0.1:1", "redis://127.0.0.1:2/0", (kafka, redis))
    >>> summary(st, after_up=False)
    'running: broker (kafka, pid 11), redis (redis, pid 12)'
    >>> summary(st, after_up=True)
    'running: broker (kafka, pid 11), redis (redis, pid 12); started nothing, all were running'
    """
    running = [
        f"{c.name} ({c.kind}, pid {c.pid})" if c.pid else f"{c.name} ({c.kind})"
        for c in status.components
        if c.running
    ]
    down = [c.name for c in status.components if not c.running]
    parts = [f"running: {', '.join(running)}" if running else "nothing running"]
    if after_up:
        started = ", ".join(status.started)
        parts.append(f"started: {started}" if started else "started nothing, all were running")
    if down:
        parts.append(f"not running: {', '.join(down)}")
    return "; ".join(parts)


@local.command("up")
@click.option(
    "--broker",
    type=click.Choice(["auto", "kafka", "tansu"]),
    default=None,
    help="Apache Kafka (needs Java + `make kafka`), tansu (pip only), or auto. "
    "Default: STREAMSCORE_LOCAL__BROKER (auto).",
)
@click.option(
    "--with-prometheus",
    is_flag=True,
    help="Also run Prometheus (Debian's `prometheus` on PATH) with the alert rules, scraping "
    "every local worker.",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Three Apache Kafka nodes (KRaft) secured as in production: SASL_SSL (SCRAM-SHA-512), "
    "TLS from a local CA, ACLs per principal, replication factor 3. Writes one env file per "
    "role under <home>/cluster/env.",
)
@json_option
@click.pass_context
def up(
    ctx: click.Context, broker: BrokerChoice | None, with_prometheus: bool, cluster: bool
) -> None:
    """Start the stack (or find it running), wait until it answers, create every topic."""
    a = app(ctx)
    t0 = time.monotonic()
    with a.err.status("starting the embedded stack..."):
        status = EmbeddedStack(a.settings).up(
            topic_table(a.settings.topics), broker, with_prometheus, cluster=cluster
        )
    data = status.to_dict() | {"seconds": round(time.monotonic() - t0, 1)}
    if cluster:
        env_dir = a.settings.home / "cluster" / "env"
        data["env_files"] = {p.stem: str(p) for p in sorted(env_dir.glob("*.env"))}

    def render(c: Console) -> None:
        _render_status(status, c)
        if cluster:
            c.print(f"cluster up in {data['seconds']} s (started: {len(status.started)} services)")
            c.print("run each role as its principal, e.g.:")
            for role, path in data["env_files"].items():
                c.print(f"  {role:8s} set -a; . {path}; set +a")

    emit(a, data, render)


@local.command("down")
@click.option("--purge", is_flag=True, help="Also delete the stack's data (Kafka log dirs).")
@json_option
@click.pass_context
def down(ctx: click.Context, purge: bool) -> None:
    """Stop exactly the processes `up` started."""
    a = app(ctx)
    stack = EmbeddedStack(a.settings)
    stopped = stack.down()
    if purge:
        for sub in ("kafka", "redis", "cluster"):
            shutil.rmtree(a.settings.home / sub, ignore_errors=True)
    data = {"stopped": [asdict(r) for r in stopped], "purged": purge}

    def render(console: Console) -> None:
        if not stopped:
            console.print("nothing was running")
        for r in stopped:
            console.print(f"stopped {r.kind} (pid {r.pid}) on {r.address}")

    emit(a, data, render)


@local.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context) -> None:
    """Report each service: which broker, pid, address, and whether it answers."""
    a = app(ctx)
    st = EmbeddedStack(a.settings).status()
    emit(a, st.to_dict(), lambda c: _render_status(st, c, after_up=False))
    if not st.healthy:
        ctx.exit(1)


@local.command("fetch-kafka")
@click.option(
    "--pom",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_POM,
    show_default=True,
    help="The pom that names Kafka's version.",
)
@click.option("--force", is_flag=True, help="Fetch even when jars are already cached.")
@json_option
@click.pass_context
def fetch_kafka(ctx: click.Context, pom: Path, force: bool) -> None:
    """Resolve Apache Kafka's broker jars from Maven Central into the cache (once)."""
    a = app(ctx)
    dest = a.settings.local.kafka_jars_dir
    have = jars_version(dest)
    fetched = False
    if have is None or force:
        with a.err.status(f"resolving Apache Kafka jars with Maven into {dest}..."):
            have = fetch_jars(pom, dest)
        fetched = True
    data = {"version": have, "jars_dir": str(dest), "fetched": fetched}
    emit(
        a,
        data,
        lambda c: c.print(
            f"Apache Kafka {have} jars {'fetched into' if fetched else 'already in'} {dest}"
        ),
    )
