"""`streamscore dlq inspect | redrive`: what was refused and why, and sending it back."""

from __future__ import annotations

import uuid
from typing import Any

import click
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
)
from rich.console import Console

from services.codec.factory import codec_for
from services.core.errors import PublishError
from services.core.settings import Settings
from services.dlq.plan import plan_redrive, summarise
from services.kafka.config import consumer_config, producer_config
from services.kafka.offsets import next_offsets
from services.kafka.ranges import committed, iter_ranges, watermarks
from services.replay.plan import Range
from streams.commands.common import app, emit, json_option, table
from streams.topics import by_record


@click.group()
def dlq() -> None:
    """Dead letters of the input topic."""


def _read(
    consumer: Consumer, settings: Settings, topic: str, stall_s: float, resume: bool
) -> list[tuple[Message, Any]]:
    """Every letter of ``topic`` up to its end as it is now: from the beginning, or (``resume``)
    from the consumer's group's committed offsets. The read side replays use too
    (``services.kafka.ranges``): all of it, or ``BrokerUnavailable``."""
    codec = codec_for(settings, by_record(settings.topics, "DeadLetter"))
    marks = watermarks(consumer, topic)
    done = committed(consumer, topic, list(marks)) if resume else {}
    ranges = [Range(p, max(low, done.get(p, -1)), high) for p, (low, high) in marks.items()]
    out = [
        (m, codec.decode_one(m.value()))
        for b in iter_ranges(consumer, topic, ranges, stall_s)
        for m in b
    ]
    return [(m, d) for m, d in out if isinstance(d, dict)]


def _preview(value: bytes | None) -> str:
    if value is None:
        return "null"
    text = value[:80].decode("utf-8", errors="replace")
    return repr(text) + ("..." if len(value) > 80 else "")


@dlq.command("inspect")
@click.option("--reason", default=None, help="Only this reason code.")
@click.option("--samples", default=5, show_default=True, help="Sample letters to show.")
@click.option("--show-payloads", is_flag=True, help="Also print original keys and values.")
@click.option(
    "--timeout", default=30.0, show_default=True, help="Give up when reading stalls this long."
)
@json_option
@click.pass_context
def inspect(
    ctx: click.Context, reason: str | None, samples: int, show_payloads: bool, timeout: float
) -> None:
    """Counts by reason and stage, and a few samples (payloads only on request)."""
    a = app(ctx)
    s = a.settings
    topic = by_record(s.topics, "DeadLetter").name
    consumer = Consumer(consumer_config(s, f"streamscore-dlq-inspect-{uuid.uuid4().hex[:8]}"))
    try:
        letters = [d for _, d in _read(consumer, s, topic, timeout, resume=False)]
    finally:
        consumer.close()
    chosen = [d for d in letters if reason is None or d["reason"] == reason]
    keep = [
        "source_topic",
        "source_partition",
        "source_offset",
        "stage",
        "reason",
        "detail",
        "worker_id",
        "failed_at",
        "redrive_count",
    ]
    shown = [
        {k: d[k] for k in keep}
        | (
            {"key": _preview(d["original_key"]), "value": _preview(d["original_value"])}
            if show_payloads
            else {}
        )
        for d in chosen[:samples]
    ]
    data = summarise(letters, reason) | {"topic": topic, "samples": shown}

    def render(c: Console) -> None:
        c.print(
            f"{topic}: {data['total']} dead letters" + (f" with reason {reason}" if reason else "")
        )
        table(c, ("reason", "count"), list(data["by_reason"].items()), right=("count",))
        for sample in shown:
            c.print(sample, highlight=False)

    emit(a, data, render)


@dlq.command("redrive")
@click.option("--reason", default=None, help="Only letters with this reason code.")
@click.option(
    "--max-redrives",
    default=3,
    show_default=True,
    help="Refuse letters already redriven this often (no endless loops).",
)
@click.option("--execute", is_flag=True, help="Actually re-publish (default: dry run).")
@click.option(
    "--timeout", default=30.0, show_default=True, help="Give up when reading stalls this long."
)
@json_option
@click.pass_context
def redrive(
    ctx: click.Context, reason: str | None, max_redrives: int, execute: bool, timeout: float
) -> None:
    """Re-publish dead letters to their source topic with a redrive-count header.

    Dry run by default: prints the plan and changes nothing. With --execute, each letter is sent
    once (the group `streamscore-dlq-redrive-<reason|all>` commits what was sent).
    """
    a = app(ctx)
    s = a.settings
    topic = by_record(s.topics, "DeadLetter").name
    group = f"streamscore-dlq-redrive-{reason or 'all'}"
    consumer = Consumer(consumer_config(s, group))
    try:
        read = _read(consumer, s, topic, timeout, resume=True)
        plan = plan_redrive([d for _, d in read], reason, max_redrives)
        if execute and plan.to_send:
            failures: list[str] = []

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failures.append(str(err))

            producer = Producer(producer_config(s))
            for r in plan.to_send:
                producer.produce(
                    r.topic, key=r.key, value=r.value, headers=r.headers, on_delivery=on_delivery
                )
            if producer.flush(30) or failures:
                raise PublishError(f"redrive not acknowledged: {failures[:3]}; nothing committed")
        if execute and read:
            consumer.commit(offsets=next_offsets(m for m, _ in read), asynchronous=False)
    finally:
        consumer.close()
    data = plan.summary() | {"executed": execute, "reason": reason, "group": group}

    def render(c: Console) -> None:
        verb = "re-published" if execute else "would re-publish (dry run; add --execute)"
        c.print(f"{verb} {len(plan.to_send)} letters to their source topic")
        c.print(
            f"skipped (other reasons): {plan.skipped_reason}; "
            f"refused (redriven {max_redrives} times already): {plan.refused_loop}"
        )

    emit(a, data, render)
