"""`streamscore schemas list | check | register`: the Avro contract and its schema ids."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from services.codec.contract import check_examples
from services.codec.factory import schema_ids, schemas_dir
from services.codec.manifest import MANIFEST_FILE, Manifest
from services.codec.registry import RegistrySchemaIds
from services.codec.schemas import load_schemas
from services.core.errors import ConfigError
from streams.commands.common import app, emit, json_option, table
from streams.topics import topic_table


@click.group()
def schemas() -> None:
    """Inspect, check and register the Avro schemas (manifest or Schema Registry)."""


def _source(settings: Any) -> str:
    return (
        f"registry {settings.schema_registry.url}" if settings.schema_registry.url else "manifest"
    )


@schemas.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context) -> None:
    """Each topic's subject, record, schema id and fingerprint."""
    a = app(ctx)
    records = load_schemas(schemas_dir(a.settings))
    ids = schema_ids(a.settings)
    rows: list[dict[str, Any]] = []
    for spec in topic_table(a.settings.topics):
        rec = records[spec.value_record]
        try:
            sid: int | None = ids.id_for(spec.subject, rec)
        except ConfigError:
            sid = None
        rows.append(
            {
                "topic": spec.name,
                "subject": spec.subject,
                "record": rec.full_name,
                "schema_id": sid,
                "fingerprint": rec.fingerprint,
                "file": str(rec.path),
            }
        )

    def render(console: Console) -> None:
        shown = [
            (
                r["subject"],
                r["record"],
                r["schema_id"] if r["schema_id"] is not None else "NOT REGISTERED",
                r["fingerprint"],
            )
            for r in rows
        ]
        title = f"schemas (ids from {_source(a.settings)})"
        table(console, ("subject", "record", "id", "fingerprint"), shown, title)

    emit(a, rows, render)


@schemas.command("check")
@json_option
@click.pass_context
def check(ctx: click.Context) -> None:
    """Fail (exit 1) unless every schema parses, every example is valid and round-trips, and
    every topic's current schema is registered.

    A new domain folder without a manifest.json yet (and no Schema Registry configured) is
    linted all the same; its subjects are listed as not registered yet, which is no problem
    until `schemas register` writes the manifest."""
    a = app(ctx)
    directory = schemas_dir(a.settings)
    records = load_schemas(directory)
    problems: list[str] = []
    results = check_examples(records, directory / "examples")
    problems += [f"{r.path}: {r.error}" for r in results if not r.ok]
    new_folder = not a.settings.schema_registry.url and not (directory / MANIFEST_FILE).exists()
    ids = None if new_folder else schema_ids(a.settings)
    unregistered: list[str] = []
    for spec in topic_table(a.settings.topics):
        rec = records.get(spec.value_record)
        if rec is None:
            problems.append(f"topic {spec.name}: no schema {spec.value_record}.avsc")
            continue
        if ids is None:
            unregistered.append(spec.subject)
            continue
        try:
            ids.id_for(spec.subject, rec)
        except ConfigError as exc:
            problems.append(str(exc))
            problems += [
                f"{spec.subject}: {p}" for p in _compat_problems(a.settings, directory, spec, rec)
            ]
    data = {
        "schemas": len(records),
        "examples_ok": sum(r.ok for r in results),
        "problems": problems,
        "unregistered": unregistered,
        "ok": not problems,
    }

    def render(console: Console) -> None:
        source = f"no {MANIFEST_FILE} yet" if new_folder else f"ids from {_source(a.settings)}"
        console.print(f"{len(records)} schemas, {data['examples_ok']} valid examples, {source}")
        for p in problems:
            console.print(f"[red]problem[/red] {p}", markup=True, highlight=False)
        if unregistered:
            console.print(
                f"not registered yet: {len(unregistered)} subjects "
                f"(`streamscore schemas register` writes {directory / MANIFEST_FILE})",
                highlight=False,
            )
        if not problems:
            console.print("[green]contract OK[/green]")

    emit(a, data, render)
    if problems:
        ctx.exit(1)


def _compat_problems(settings: Any, directory: Any, spec: Any, rec: Any) -> list[str]:
    """Compatibility problems of an unregistered schema against its subject's latest version."""
    level = settings.schema_registry.compatibility
    if settings.schema_registry.url:
        registry = RegistrySchemaIds.from_settings(settings.schema_registry)
        return (
            [] if registry.compatible(spec.subject, rec, level) else [f"registry says not {level}"]
        )
    path = directory / MANIFEST_FILE
    manifest = Manifest.load(path) if path.exists() else Manifest.empty()
    return manifest.compatibility_problems(spec.subject, rec, level)


@schemas.command("register")
@json_option
@click.pass_context
def register(ctx: click.Context) -> None:
    """Register each topic's current schema: in the Schema Registry when one is configured,
    else as a new version in the domain folder's manifest.json (idempotent). A schema that breaks
    the compatibility level is refused with exit 2, and nothing is registered."""
    a = app(ctx)
    directory = schemas_dir(a.settings)
    records = load_schemas(directory)
    rows: list[dict[str, Any]] = []
    if a.settings.schema_registry.url:
        registry = RegistrySchemaIds.from_settings(a.settings.schema_registry)
        for spec in topic_table(a.settings.topics):
            level = a.settings.schema_registry.compatibility
            if not registry.compatible(spec.subject, records[spec.value_record], level):
                raise ConfigError(
                    f"the registry says {records[spec.value_record].full_name} is not compatible "
                    f"with the latest version of {spec.subject}"
                )
            sid = registry.register(spec.subject, records[spec.value_record])
            rows.append({"subject": spec.subject, "id": sid, "version": None, "added": None})
    else:
        path = directory / MANIFEST_FILE
        manifest = Manifest.load(path) if path.exists() else Manifest.empty()
        for spec in topic_table(a.settings.topics):
            manifest, sv, added = manifest.register(
                spec.subject, records[spec.value_record], a.settings.schema_registry.compatibility
            )
            rows.append({"subject": sv.subject, "id": sv.id, "version": sv.version, "added": added})
        manifest.dump(path)

    def render(console: Console) -> None:
        for r in rows:
            state = {True: "registered", False: "unchanged", None: "registered"}[r["added"]]
            version = f" v{r['version']}" if r["version"] else ""
            console.print(f"{state:10} {r['subject']}{version} id={r['id']}")

    emit(a, rows, render)
