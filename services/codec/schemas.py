"""The Avro contract on disk: one record per ``<Record>.avsc``, parsed once and fingerprinted."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from services.core.errors import ConfigError

# The repository's schemas/ directory: the feed domain, and the platform's own records.
DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
# Records every domain shares; a domain folder without them uses these.
PLATFORM_RECORDS = ("DeadLetter", "DriftSignal", "RetrainRequest", "ModelEvent", "FeatureLog")


def fingerprint(schema: dict[str, Any]) -> str:
    """SHA-256 of the whole schema as canonical JSON (sorted keys, no whitespace): ``sha256:<hex>``.

    Docs and defaults count: a registry stores the exact text, and a changed default changes how
    old data is read, so either change is a new version. Whitespace and key order do not count.

    >>> a = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}
    >>> b = {"fields": [{"type": "int", "name": "x"}], "name": "R", "type": "record"}
    >>> fingerprint(a) == fingerprint(b), fingerprint(a) == fingerprint(a | {"doc": "d"})
    (True, False)
    """
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def without_timestamp_logical_types(schema: Any) -> Any:
    """Copy of ``schema`` whose timestamp fields decode as plain epoch-millisecond ints.

    Converting to ``datetime`` costs about 15% of decode time on the hot path and loses nothing
    we need, so records carry ``event_time`` as an ``int`` (epoch ms, UTC) everywhere.

    >>> without_timestamp_logical_types({"type": "long", "logicalType": "timestamp-millis"})
    {'type': 'long'}
    """
    if isinstance(schema, list):
        return [without_timestamp_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: without_timestamp_logical_types(v) for k, v in schema.items()}
        if out.get("logicalType") in {"timestamp-millis", "timestamp-micros"}:
            del out["logicalType"]
        return out
    return schema


def full_name(source: dict[str, Any]) -> str:
    """The namespaced record name.

    >>> full_name({"name": "R", "namespace": "a.b"}), full_name({"name": "x.R"})
    ('a.b.R', 'x.R')
    """
    name = str(source.get("name", ""))
    namespace = source.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


@dataclass(frozen=True, slots=True)
class RecordSchema:
    """One record schema: its source JSON, parsed forms and fingerprint."""

    name: str  # short record name, e.g. "Prediction" (also the file stem)
    full_name: str  # namespaced, e.g. "io.streamscore.ops.DeadLetter"
    source: dict[str, Any]
    parsed: Any  # fastavro's parsed schema, for writing
    reader: Any  # parsed, timestamps as ints, for reading
    fingerprint: str
    path: Path


def parse_record(source: dict[str, Any], path: Path) -> RecordSchema:
    """Parse one record schema, raising ``ConfigError`` naming the file when it is invalid."""
    if source.get("type") != "record" or "name" not in source:
        raise ConfigError(f"{path}: top level must be one Avro record with a name")
    try:
        parsed = fastavro.parse_schema(copy.deepcopy(source))
        reader = fastavro.parse_schema(without_timestamp_logical_types(copy.deepcopy(source)))
    except (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: invalid Avro schema: {exc}") from exc
    name = str(source["name"])
    return RecordSchema(
        name=name.rsplit(".", 1)[-1],
        full_name=full_name(source),
        source=source,
        parsed=parsed,
        reader=reader,
        fingerprint=fingerprint(source),
        path=path,
    )


def load_schemas(schemas_dir: Path) -> dict[str, RecordSchema]:
    """Load every ``*.avsc`` in ``schemas_dir``, keyed by short record name, and the platform's
    records (``PLATFORM_RECORDS``) the folder does not have.

    Raises:
        ConfigError: a file is not JSON, not a record, or its record name differs from its stem.
    """
    if not schemas_dir.is_dir():
        raise ConfigError(f"schemas directory {schemas_dir} does not exist")
    out: dict[str, RecordSchema] = {}
    for path in sorted(schemas_dir.glob("*.avsc")):
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        record = parse_record(source, path)
        if record.name != path.stem:
            raise ConfigError(f"{path}: record is named {record.name!r}, file must match")
        out[record.name] = record
    if not out:
        raise ConfigError(f"no *.avsc files in {schemas_dir}")
    if schemas_dir.resolve() != DEFAULT_SCHEMAS_DIR.resolve():
        for name in PLATFORM_RECORDS:
            if name not in out:
                path = DEFAULT_SCHEMAS_DIR / f"{name}.avsc"
                out[name] = parse_record(json.loads(path.read_text(encoding="utf-8")), path)
    return out
