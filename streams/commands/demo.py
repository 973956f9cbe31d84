"""`streamscore demo`: the embedded stack and the Avro contract, end to end, in one command.

The scoring path (features, model, worker) joins this story with the scoring-path issue; today the
demo proves the foundation: stack up, topics, Avro wire format through a real broker, hostile
bytes rejected with a reason, every message accounted for, stack left as it was found.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import click
from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.codec.examples import load_example
from services.codec.factory import codec_for, schemas_dir
from services.codec.schemas import load_schemas
from services.core.outcomes import Rejected
from services.embedded.stack import EmbeddedStack
from services.kafka.config import consumer_config, producer_config
from streams.commands.common import app, emit, json_option
from streams.topics import by_record, topic_table

RUN_HEADER = "streamscore-demo-run"
# Deliberately broken values, to show they are refused with a reason and still counted.
HOSTILE = (b"", b'{"json": "not avro"}', b"\x00\x00\x00", b"\x00\x00\x00\x03\xe7\xff\xff")


def _events(template: dict[str, Any], n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        template
        | {
            "event_id": str(uuid.uuid4()),
            "event_time": now,
            "user_id": f"u-{i % 97:05d}",
            "item_id": f"i-{i % 31:05d}",
            "position": i % 20,
        }
        for i in range(n)
    ]


@click.command()
@click.option("--events", "n_events", default=2000, show_default=True, help="Events to send.")
@click.option("--keep-stack", is_flag=True, help="Leave the stack running afterwards.")
@json_option
@click.pass_context
def demo(ctx: click.Context, n_events: int, keep_stack: bool) -> None:
    """Bring up the stack, stream Avro events through Kafka, read them back, and summarise."""
    a = app(ctx)
    s = a.settings
    stack = EmbeddedStack(s)
    with a.err.status("starting the embedded stack..."):
        status = stack.up(topic_table(s.topics))
    a.err.print(f"stack: {status.broker} broker on {status.bootstrap_servers}, {status.redis_url}")
    try:
        summary = _run(a.err, s, n_events, status.broker)
    finally:
        if status.started and not keep_stack:
            stack.down()
    summary["stack"] = {"broker": status.broker, "started": list(status.started)}

    def render(console: Console) -> None:
        t = Table(title="streamscore demo (foundation)")
        t.add_column("what")
        t.add_column("value", justify="right")
        for key in ("sent", "hostile_sent", "decoded", "rejected", "unaccounted"):
            t.add_row(key, str(summary[key]))
        for reason, count in sorted(summary["rejected_by_reason"].items()):
            t.add_row(f"  rejected: {reason}", str(count))
        t.add_row(
            "throughput, produced and read back (events/s)",
            f"{summary['throughput_per_second']:,.0f}",
        )
        for p in ("p50", "p95", "p99"):
            t.add_row(f"produce -> readable {p} (ms)", f"{summary['latency_ms'][p]:.1f}")
        console.print(t)
        console.print(
            "stack left running" if keep_stack or not status.started else "stack stopped again"
        )

    emit(a, summary, render)
    if summary["unaccounted"] != 0:
        ctx.exit(1)


def _header(headers: Any, name: str) -> str | None:
    value = dict(headers or []).get(name)
    return value.decode() if isinstance(value, bytes) else value


def _run(err: Console, s: Any, n: int, broker: str) -> dict[str, Any]:
    topic = by_record(s.topics, "Interaction")
    records = load_schemas(schemas_dir(s))
    codec = codec_for(s, topic, records)
    template = load_example(
        schemas_dir(s) / "examples" / "Interaction" / "home_feed_ios.json",
        records["Interaction"].source,
    )
    run_id = str(uuid.uuid4())
    events = _events(template, n)
    payloads = codec.encode_many(events)
    messages = [
        *((str(e["user_id"]).encode(), v) for e, v in zip(events, payloads, strict=True)),
        *((b"hostile", h) for h in HOSTILE),
    ]
    total = len(messages)
    producer = Producer(producer_config(s))
    consumer = Consumer(consumer_config(s, f"streamscore-demo-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic.name])
    # Join the group before producing, so latency measures the pipe, not the rebalance.
    joined = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < joined:
        consumer.poll(0.1)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    decoded = 0
    reasons: Counter[str] = Counter()
    seen: set[int] = set()

    def drain(timeout: float) -> None:
        nonlocal decoded
        batch = consumer.consume(num_messages=s.batch.max_messages, timeout=timeout)
        now = time.perf_counter()
        ours = [
            m for m in batch if m.error() is None and _header(m.headers(), RUN_HEADER) == run_id
        ]
        for m, result in zip(ours, codec.decode_many([m.value() for m in ours]), strict=True):
            seq = int(_header(m.headers(), "seq") or -1)
            if seq in seen or seq not in sent_at:
                continue
            seen.add(seq)
            latencies.append((now - sent_at[seq]) * 1000)
            if isinstance(result, Rejected):
                reasons[result.reason.value] += 1
            else:
                decoded += 1

    start = time.perf_counter()
    chunk = 200
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("streaming", total=total)
            for first in range(0, total, chunk):
                for i in range(first, min(first + chunk, total)):
                    key, value = messages[i]
                    sent_at[i] = time.perf_counter()
                    producer.produce(
                        topic.name,
                        key=key,
                        value=value,
                        headers=[(RUN_HEADER, run_id.encode()), ("seq", str(i).encode())],
                    )
                producer.poll(0)
                drain(0.01)
                progress.update(task, completed=len(seen))
            producer.flush(30)
            deadline = time.monotonic() + 60
            while len(seen) < total and time.monotonic() < deadline:
                drain(0.2)
                progress.update(task, completed=len(seen))
    finally:
        consumer.close()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    return {
        "broker": broker,
        "sent": n,
        "hostile_sent": len(HOSTILE),
        "decoded": decoded,
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(reasons),
        "unaccounted": total - decoded - sum(reasons.values()),
        "throughput_per_second": total / elapsed if elapsed else 0.0,
        "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
    }
