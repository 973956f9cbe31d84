"""The column encoder writes exactly the bytes fastavro writes (fastavro is the oracle), for the
Prediction schema and for every type it supports, over generated records."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.codec.columns import ColumnEncoder, Const, varints, zigzag_varint
from services.codec.schemas import DEFAULT_SCHEMAS_DIR
from services.core.errors import ConfigError

PREDICTION = json.loads((DEFAULT_SCHEMAS_DIR / "Prediction.avsc").read_text())
SCHEMA = {
    "type": "record",
    "name": "All",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "ok", "type": "boolean"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
        {"name": "o", "type": ["null", "string"]},
        {"name": "o2", "type": ["long", "null"]},
        {"name": "a", "type": {"type": "array", "items": "string"}},
    ],
}

text = st.text(max_size=80)
row = st.fixed_dictionaries(
    {
        "s": text,
        "b": st.binary(max_size=200),
        "i": st.integers(-(2**31), 2**31 - 1),
        "l": st.integers(-(2**63), 2**63 - 1),
        "t": st.integers(0, 2**45),
        "f": st.floats(width=32, allow_nan=False),
        "d": st.floats(allow_nan=False),
        "ok": st.booleans(),
        "e": st.sampled_from(["A", "B", "C"]),
        "o": st.none() | text,
        "o2": st.none() | st.integers(-(2**63), 2**63 - 1),
        "a": st.lists(text, max_size=4),
    }
)


def _fastavro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.lists(row, max_size=50), st.booleans())
def test_columns_encode_as_fastavro_does(rows: list[dict[str, Any]], as_arrays: bool) -> None:
    enc = ColumnEncoder(SCHEMA)
    cols: dict[str, Any] = {f["name"]: [r[f["name"]] for r in rows] for f in SCHEMA["fields"]}
    if as_arrays and rows:
        cols["l"] = np.array(cols["l"], dtype=np.int64)
        cols["d"] = np.array(cols["d"], dtype=np.float64)
    assert enc.encode(cols, len(rows), b"\x00hdr") == [
        b"\x00hdr" + _fastavro(SCHEMA, r) for r in rows
    ]


def test_constants_and_the_prediction_schema() -> None:
    enc = ColumnEncoder(PREDICTION)
    rows = [
        {
            "prediction_id": f"{i:032x}",
            "event_id": f"e-{i}",
            "user_id": "u" * i,
            "item_id": "é" * i,
            "score": i / 7,
            "model_name": "engagement",
            "model_version": "12",
            "variant": "champion" if i % 2 else "challenger",
            "degraded": bool(i % 3),
            "missing_features": ["user"] if i % 4 == 0 else [],
            "event_time": 1_764_000_000_000 + i,
            "scored_at": 1_764_000_000_500,
            "decision": (None, True, False)[i % 3],
        }
        for i in range(70)
    ]
    cols: dict[str, Any] = {k: [r[k] for r in rows] for k in rows[0]}
    cols["model_name"] = Const("engagement")
    cols["model_version"] = Const("12")
    cols["scored_at"] = Const(1_764_000_000_500)
    cols["score"] = np.array(cols["score"])
    assert enc.encode(cols, len(rows)) == [_fastavro(PREDICTION, r) for r in rows]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_vectorised_varints_equal_the_scalar_ones(values: list[int]) -> None:
    assert varints(values) == [zigzag_varint(v) for v in values]


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "map", "values": "string"},
        ["null", "string", "long"],
        {"type": "fixed", "name": "F", "size": 4},
    ],
)
def test_unsupported_types_are_refused_at_construction(field_type: Any) -> None:
    with pytest.raises(ConfigError):
        ColumnEncoder(
            {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}
        )
