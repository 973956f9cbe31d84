"""Tables on disk (CSV, Parquet, JSON lines) read in chunks of rows, with bounded memory.

CSV cells are read as text and converted by the record's schema (``services.codec.table``), so
an id such as ``007`` stays a string and nothing is inferred from the first rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError

CHUNK_ROWS = 50_000
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


def format_of(path: Path) -> str:
    """The file's format from its suffix.

    >>> format_of(Path("a.CSV")), format_of(Path("b.jsonl"))
    ('csv', 'jsonl')
    """
    fmt = FORMATS.get(path.suffix.lower()) or ("jsonl" if path.suffix.lower() == ".json" else "")
    if not fmt:
        raise ConfigError(f"{path}: give a .csv, .parquet or .jsonl file")
    return fmt


def read_rows(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``path``, ``chunk_rows`` at a time.

    Raises:
        ConfigError: the file is missing, or not readable as its format.
    """
    fmt = format_of(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        if fmt == "csv":
            import pandas as pd

            with pd.read_csv(
                path, dtype=str, keep_default_na=False, chunksize=chunk_rows
            ) as reader:
                for frame in reader:
                    yield frame.to_dict("records")
        elif fmt == "parquet":
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pylist()
        else:
            chunk: list[dict[str, Any]] = []
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    value = json.loads(line)
                    if not isinstance(value, dict):
                        raise ConfigError(f"{path}:{n}: a line must be one JSON object")
                    chunk.append(value)
                    if len(chunk) >= chunk_rows:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable as {fmt}: {exc}") from exc
    except Exception as exc:  # pandas and pyarrow raise their own parser errors
        raise ConfigError(f"{path}: not readable as {fmt}: {type(exc).__name__}: {exc}") from exc


def read_all(path: Path) -> list[dict[str, Any]]:
    return [row for chunk in read_rows(path) for row in chunk]
