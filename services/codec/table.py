"""Rows from a file (CSV, Parquet, JSON lines) as records of an Avro schema.

A CSV cell is text and a Parquet cell may be a NumPy scalar or NaN: each is converted to the
field's Avro type, and a row that cannot be is reported with its number and field, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.codec.schemas import RecordSchema

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}
_NO_DEFAULT = object()


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why row ``row`` (1-based, as a spreadsheet counts data rows) was refused."""

    row: int
    field: str
    detail: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.detail}"


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def _scalar(v: Any) -> Any:
    """A NumPy or pandas scalar as a Python one."""
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, str | bytes) else v


def _timestamp(v: Any) -> int:
    if isinstance(v, str) and not v.lstrip("-").isdigit():
        return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
    if hasattr(v, "timestamp") and not isinstance(v, int | float):
        return int(v.timestamp() * 1000)  # a datetime or pandas Timestamp
    return _integer(v)


def _integer(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("a boolean is not an integer")
    number = float(v) if isinstance(v, str) else v
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"{v!r} is not a whole number")
        return int(number)
    return int(number)


def _boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    text = str(v).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{v!r} is not true or false")


def convert(avro_type: Any, v: Any) -> Any:
    """One cell as ``avro_type`` (a branch of a union is tried in order, null first)."""
    if isinstance(avro_type, list):
        if _empty(v):
            if "null" in avro_type:
                return None
            raise ValueError("empty")
        errors = []
        for branch in avro_type:
            if branch == "null":
                continue
            try:
                return convert(branch, v)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if _empty(v) and avro_type != "string":
        raise ValueError("empty")
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if avro_type.get("logicalType", "").startswith("timestamp"):
            return _timestamp(v)
        if kind == "enum":
            text = str(v)
            if text not in avro_type["symbols"]:
                raise ValueError(f"{text!r} is not one of {avro_type['symbols']}")
            return text
        return convert(kind, v)
    if avro_type in ("int", "long"):
        return _integer(v)
    if avro_type in ("float", "double"):
        return float(v)
    if avro_type == "boolean":
        return _boolean(v)
    if avro_type == "string":
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise ValueError("empty")
        return str(v)
    raise ValueError(f"type {avro_type!r} cannot come from a table cell")


def records_from_rows(
    record: RecordSchema, rows: Iterable[Mapping[str, Any]], first_row: int = 1
) -> tuple[list[dict[str, Any]], list[RowProblem]]:
    """Convert ``rows`` to records of ``record``: a missing or empty cell takes the field's
    default; columns the schema does not know are ignored. Returns the records converted and
    the problems of the rows that were not."""
    fields = [
        (f["name"], f["type"], f.get("default", _NO_DEFAULT)) for f in record.source["fields"]
    ]
    out: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    for n, row in enumerate(rows, first_row):
        rec: dict[str, Any] = {}
        for name, avro_type, default in fields:
            v = _scalar(row.get(name))
            if _empty(v) and default is not _NO_DEFAULT and not (avro_type == "string" and v == ""):
                rec[name] = default
                continue
            try:
                rec[name] = convert(avro_type, v)
            except (ValueError, TypeError, OverflowError) as exc:
                problems.append(RowProblem(n, name, str(exc) or type(exc).__name__))
                break
        else:
            out.append(rec)
    return out, problems
