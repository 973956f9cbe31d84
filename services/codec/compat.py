"""Schema compatibility (Avro resolution rules): can a new reader read what an old writer wrote?

BACKWARD compatibility of a new version means: consumers on the new schema read data written with
the previous one. The rules are Avro's schema resolution: fields matched by name (or alias), a
reader field the writer lacks needs a default, numeric promotions (int→long→float→double),
string↔bytes, enum symbols the reader lacks need a reader default, unions branch by branch.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
    "boolean": {"boolean"},
    "null": {"null"},
}


def backward_problems(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can).

    >>> old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    >>> new_ok = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"},
    ...     {"name": "b", "type": ["null", "string"], "default": None}]}
    >>> backward_problems(new_ok, old)
    []
    >>> new_bad = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"},
    ...     {"name": "c", "type": "int"}]}
    >>> backward_problems(new_bad, old)
    ['R.a: int cannot be read as string', 'R.c: new field without a default']
    """
    return _check(reader, writer, "", {}, {})


def _name(schema: Any) -> str:
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            return str(schema["name"]).rsplit(".", 1)[-1]
        return str(schema.get("type"))
    if isinstance(schema, list):
        return "union"
    return str(schema).rsplit(".", 1)[-1]


def _resolve(schema: Any, named: dict[str, Any]) -> Any:
    """Follow references to named types; strip logical types (they do not affect resolution)."""
    if isinstance(schema, str) and schema not in _PROMOTIONS:
        return named.get(schema.rsplit(".", 1)[-1], schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            named[str(schema["name"]).rsplit(".", 1)[-1]] = schema
            return schema
        if kind in _PROMOTIONS:
            return kind
        if isinstance(kind, dict | list) or (
            isinstance(kind, str) and kind not in ("array", "map")
        ):
            return _resolve(kind, named)
    return schema


def _check(
    reader: Any, writer: Any, path: str, rnamed: dict[str, Any], wnamed: dict[str, Any]
) -> list[str]:
    r, w = _resolve(reader, rnamed), _resolve(writer, wnamed)
    where = path or _name(r)
    if isinstance(w, list):  # every branch the writer may have used must be readable
        return [p for branch in w for p in _check(r, branch, path, rnamed, wnamed)]
    if isinstance(r, list):  # the writer's type must match some reader branch
        for branch in r:
            if not _check(branch, w, path, dict(rnamed), dict(wnamed)):
                _check(branch, w, path, rnamed, wnamed)  # record the named types it defines
                return []
        return [f"{where}: {_name(w)} matches no branch of the reader's union"]
    if isinstance(w, str) or isinstance(r, str):
        if isinstance(w, str) and isinstance(r, str) and r in _PROMOTIONS.get(w, set()):
            return []
        return [f"{where}: {_name(w)} cannot be read as {_name(r)}"]
    rk, wk = r.get("type"), w.get("type")
    if rk != wk:
        return [f"{where}: {wk} cannot be read as {rk}"]
    if rk == "record":
        if _name(r) != _name(w):
            return [f"{where}: record {_name(w)} cannot be read as {_name(r)}"]
        base = path or _name(r)
        wfields = {f["name"]: f for f in w["fields"]}
        for f in w["fields"]:
            for alias in f.get("aliases", []):
                wfields.setdefault(alias, f)
        problems = []
        for f in r["fields"]:
            match = wfields.get(f["name"]) or next(
                (wfields[a] for a in f.get("aliases", []) if a in wfields), None
            )
            fpath = f"{base}.{f['name']}"
            if match is None:
                if "default" not in f:
                    problems.append(f"{fpath}: new field without a default")
                continue
            problems += _check(f["type"], match["type"], fpath, rnamed, wnamed)
        return problems
    if rk == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            return [f"{where}: enum symbols {missing} removed and the reader has no default"]
        return []
    if rk == "fixed":
        return [] if r.get("size") == w.get("size") else [f"{where}: fixed size changed"]
    if rk == "array":
        return _check(r["items"], w["items"], f"{where}[]", rnamed, wnamed)
    if rk == "map":
        return _check(r["values"], w["values"], f"{where}{{}}", rnamed, wnamed)
    return []


def compatibility_problems(new: Any, old: Any, level: str) -> list[str]:
    """Problems of replacing ``old`` by ``new`` under a Confluent compatibility level.

    BACKWARD: new readers read old data (add fields only with defaults; removing is fine).
    FORWARD: old readers read new data (remove only fields that had defaults).
    FULL: both. NONE: anything goes.
    """
    problems: list[str] = []
    if level in ("BACKWARD", "FULL"):
        problems += [
            f"new consumers cannot read old data: {p}" for p in backward_problems(new, old)
        ]
    if level in ("FORWARD", "FULL"):
        problems += [
            "old consumers cannot read new data: "
            + p.replace("new field without a default", "field removed, and it had no default")
            for p in backward_problems(old, new)
        ]
    return problems
