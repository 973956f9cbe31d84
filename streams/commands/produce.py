"""`streamscore produce TOPIC`: validate a value, frame it, send it (smoke tests, reproducing an
incident); `--unchecked` sends it without the checks, to exercise the dead-letter path."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from services.codec.avro import AvroCodec
from services.codec.factory import codec_for, schemas_dir
from services.core.errors import BrokerUnavailable, ConfigError
from services.core.records import PRODUCER_HEADER
from services.domain.config import domain_of
from services.scoring.announce import send_all
from services.validation.rules import RecordRules, validate_one
from streams.commands.common import app, emit, json_option
from streams.topics import topic_table


@click.command()
@click.argument("topic")
@click.option("--value", "value", default=None, help="A JSON object, or @FILE of JSON lines.")
@click.option("--example", is_flag=True, help="The record's first example, with a new id and now.")
@click.option(
    "--key", default=None, help="Message key [default: the domain's key field, else event_id]."
)
@click.option("--key-field", default=None, help="Take each message's key from this field.")
@click.option(
    "--unchecked",
    is_flag=True,
    help="FOR TESTING: skip the rules, and send a value that does not match the schema as its "
    "JSON text, so the worker dead-letters it.",
)
@click.option("--producer-id", default="cli", show_default=True, help="The producer-id header.")
@json_option
@click.pass_context
def produce(
    ctx: click.Context,
    topic: str,
    value: str | None,
    example: bool,
    key: str | None,
    key_field: str | None,
    unchecked: bool,
    producer_id: str,
) -> None:
    """Validate each value against the topic's Avro schema and the record's rules (the same
    checks the worker makes), then send it framed in the Confluent wire format. Nothing is sent
    when any value is invalid (exit 2, naming the value, field and rule).

    --unchecked is for testing the dead-letter path: no rule is checked, and a value the
    schema refuses is sent as its JSON text (not Avro), which the worker refuses at decode."""
    a = app(ctx)
    s = a.settings
    if (value is None) == (not example):
        raise click.UsageError("give --value or --example")
    if key is not None and key_field is not None:
        raise click.UsageError("give --key or --key-field, not both")
    spec = next((t for t in topic_table(s.topics) if t.name == topic), None)
    if spec is None:
        raise ConfigError(f"{topic} is not in the topic table (streamscore topics)")
    codec = codec_for(s, spec)
    values = _example(s, spec.value_record) if example else _values(value or "")
    rules_path = schemas_dir(s) / "rules" / f"{spec.value_record}.json"
    rules = RecordRules.load(spec.value_record, rules_path.parent) if rules_path.exists() else None
    domain = domain_of(s)
    keys = {domain.event_record: domain.key_field, domain.label.record: domain.label.join_key}
    framed, not_avro = frame_values(
        values,
        codec,
        None if unchecked else rules,
        int(time.time() * 1000),
        key=key,
        key_field=key_field,
        default_key_field=keys.get(spec.value_record, "event_id"),
        unchecked=unchecked,
    )
    if unchecked:
        a.err.print(
            f"[bold red]UNCHECKED[/bold red] (for testing): {len(framed)} value(s) sent without "
            f"the rules, {not_avro} of them not Avro",
            highlight=False,
        )
    header: list[tuple[str, str | bytes | None]] = [(PRODUCER_HEADER, producer_id.encode())]
    not_sent = send_all(s, topic, [(k, payload, header) for k, payload in framed])
    if not_sent is not None:
        # A refusal inside is the cluster's answer to this write: stage and topic let the CLI
        # name the Write on the topic (services.kafka.denied.from_error).
        raise BrokerUnavailable(
            f"not sent to {topic} at {s.kafka_bootstrap}: {not_sent}", topic=topic, stage="publish"
        )
    result: dict[str, Any] = {"topic": topic, "sent": len(framed)}
    if unchecked:
        result |= {"unchecked": True, "not_avro": not_avro}

    def render(c: Console) -> None:
        c.print(f"sent {len(framed)} to {topic}")

    emit(a, result, render)


def frame_values(
    values: list[dict[str, Any]],
    codec: AvroCodec,
    rules: RecordRules | None,
    now_ms: int,
    *,
    key: str | None = None,
    key_field: str | None = None,
    default_key_field: str = "event_id",
    unchecked: bool = False,
) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """Each value as (key, framed payload), and how many were sent as JSON text, not Avro.

    The key is ``key`` when given, else the value's ``key_field`` (an error when it has none),
    else its ``default_key_field`` or ``event_id`` (none when it has neither). ``rules`` None
    checks no rule. Unchecked, a value the schema refuses becomes its JSON text.

    Raises:
        ConfigError: a value does not match the schema or breaks a rule (checked), or has no
            ``key_field``; it names the value by its 1-based position.
    """
    framed: list[tuple[bytes | None, bytes]] = []
    not_avro = 0
    for i, record in enumerate(values, 1):
        try:
            payload = codec.encode_one(record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if not unchecked:
                raise ConfigError(f"value {i}: does not match {codec.record.name}: {exc}") from exc
            payload = json.dumps(record).encode()
            not_avro += 1
        problem = validate_one(record, rules, now_ms) if rules is not None else None
        if problem is not None:
            raise ConfigError(f"value {i}: {problem.reason.value}: {problem.detail}")
        if key is not None:
            k: Any = key
        elif key_field is not None:
            if record.get(key_field) is None:
                raise ConfigError(f"value {i}: no field {key_field} for --key-field")
            k = record[key_field]
        else:
            k = record.get(default_key_field, record.get("event_id"))
        framed.append((None if k is None else str(k).encode(), payload))
    return framed, not_avro


def _values(text: str) -> list[dict[str, Any]]:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as exc:
            raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--value") from exc
    else:
        lines = [text]
    out = []
    for i, line in enumerate(lines, 1):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"value {i} is not JSON: {exc}", param_hint="--value") from exc
        if not isinstance(parsed, dict):
            raise click.BadParameter(f"value {i} is not a JSON object", param_hint="--value")
        out.append(parsed)
    return out


def _example(s: Any, record: str) -> list[dict[str, Any]]:
    folder = schemas_dir(s) / "examples" / record
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"no example for {record} in {folder}")
    value = json.loads(files[0].read_text(encoding="utf-8"))
    if "event_id" in value:
        value["event_id"] = str(uuid.uuid4())
    if "event_time" in value:
        value["event_time"] = int(time.time() * 1000)
    return [value]
