"""Checks of the Avro contract itself: every example is valid for its schema and round-trips."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate

from services.codec.examples import load_example
from services.codec.schemas import RecordSchema
from services.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """The verdict on one example file."""

    path: Path
    record: str
    ok: bool
    error: str = ""


def roundtrip(record: RecordSchema, value: dict[str, Any]) -> dict[str, Any]:
    """Write ``value`` with the schema and read it back (timestamps stay epoch-ms ints)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, record.parsed, value, strict=True)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, record.reader)
    if not isinstance(out, dict):
        raise TypeError(f"{record.name} did not decode to a record")
    return out


def check_example(record: RecordSchema, path: Path) -> ExampleResult:
    """Validate one example (types, ranges, required fields) and round-trip it."""
    try:
        # An example may leave out fields that have defaults (e.g. written before they existed).
        defaults = {f["name"]: f["default"] for f in record.source["fields"] if "default" in f}
        value = defaults | load_example(path, record.source)
        validate(value, record.parsed, raise_errors=True, strict=True)
        back = roundtrip(record, value)
    except (ConfigError, AvroValidationError, ValueError, TypeError) as exc:
        return ExampleResult(path, record.name, False, f"{type(exc).__name__}: {exc}")
    diff = sorted(k for k in value if back.get(k) != value[k])
    if diff:
        return ExampleResult(path, record.name, False, f"fields changed on round trip: {diff}")
    return ExampleResult(path, record.name, True)


def check_examples(schemas: dict[str, RecordSchema], examples_dir: Path) -> list[ExampleResult]:
    """Check every ``examples/<Record>/*.json``; a record without examples is a failure too."""
    results: list[ExampleResult] = []
    for name, record in sorted(schemas.items()):
        if record.path.parent.resolve() != examples_dir.parent.resolve():
            continue  # a platform record another folder holds, with its examples
        files = sorted((examples_dir / name).glob("*.json"))
        if not files:
            results.append(
                ExampleResult(examples_dir / name, name, False, "no example for this record")
            )
        results.extend(check_example(record, f) for f in files)
    for folder in sorted(p for p in examples_dir.iterdir() if p.is_dir()):
        if folder.name not in schemas:
            results.append(
                ExampleResult(folder, folder.name, False, "examples for a record with no schema")
            )
    return results
