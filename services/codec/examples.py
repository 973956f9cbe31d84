"""Example records stored as JSON (``schemas/examples/<Record>/*.json``) turned into Avro values.

Examples are the record as a plain JSON object: unions are written unwrapped, timestamps as epoch
milliseconds, and ``bytes`` as strings whose code points are the byte values (as in Avro's own JSON
encoding), so ``"u-42"`` is ``b"u-42"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def from_json(value: Any, schema: Any, named: dict[str, Any] | None = None) -> Any:
    """Convert a JSON value to what fastavro expects for ``schema`` (only ``bytes`` differ).

    >>> from_json({"k": "ab"}, {"type": "record", "name": "R", "fields": [
    ...     {"name": "k", "type": ["null", "bytes"]}]})
    {'k': b'ab'}
    """
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema == "bytes" and isinstance(value, str):
            return value.encode("latin-1")
        if schema not in _PRIMITIVES and schema in named:
            return from_json(value, named[schema], named)
        return value
    if isinstance(schema, list):
        if value is None:
            return None
        for branch in schema:
            if branch != "null":
                return from_json(value, branch, named)
        return value
    kind = schema.get("type")
    if kind == "record":
        named[schema["name"]] = schema
        if schema.get("namespace"):
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        if not isinstance(value, dict):
            return value
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        return {k: from_json(v, fields[k], named) if k in fields else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [from_json(v, schema["items"], named) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: from_json(v, schema["values"], named) for k, v in value.items()}
    if kind in ("enum", "fixed"):
        named[schema["name"]] = schema
        return value
    return from_json(value, kind, named)


def load_example(path: Path, schema: dict[str, Any]) -> dict[str, Any]:
    """Read one example file for ``schema``.

    Raises:
        ConfigError: the file is not a JSON object.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an example must be a JSON object")
    result: dict[str, Any] = from_json(raw, schema)
    return result
