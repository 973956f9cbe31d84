"""`streamscore score-file IN --out OUT`: score a file of events through the worker's stages."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.codec.table import records_from_rows
from services.core.errors import ConfigError, StreamMLError
from services.scoring.registry import MlflowRegistry
from streams.adapters import build_serving
from streams.commands.common import app, emit, json_option
from streams.files import format_of, read_rows
from streams.scorer import Scorer

CHUNK = 5000
# The prediction's own columns, in the order written; carried event fields follow event_id.
HEAD = ("event_id", "prediction_id")
TAIL = (
    "score",
    "model_name",
    "model_version",
    "variant",
    "degraded",
    "missing_features",
    "scored_at",
)
KEPT_PREFIX = "input_"
PROBABILITY_PREFIX = "probability__"  # a multiclass prediction's column per class


def prediction_row(
    record: dict[str, Any],
    carry: tuple[str, ...],
    fmt: str,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One output row of a prediction record: its id, the carried event fields, the score and
    its provenance (a multiclass prediction adds ``predicted_class`` and a
    ``probability__<class>`` column per class after the score); then, when ``source`` (the
    input row) is given, the input's other columns (``--keep-columns``), those named like an
    output column as ``input_<name>``.
    ``missing_features`` is a list, except in CSV, where it is joined with commas.

    >>> rec = {"event_id": "e1", "prediction_id": "p1", "entity": "a1", "score": 0.5,
    ...        "model_name": "m", "model_version": "3", "variant": "champion",
    ...        "degraded": False, "missing_features": ["g1", "g2"], "scored_at": 7}
    >>> row = prediction_row(rec, ("entity",), "jsonl", {"event_id": "e1", "label": 1,
    ...                      "score": "x"})
    >>> list(row)[:3], row["missing_features"], row["label"], row["input_score"]
    (['event_id', 'prediction_id', 'entity'], ['g1', 'g2'], 1, 'x')
    >>> prediction_row(rec, (), "csv")["missing_features"]
    'g1,g2'
    """
    row = {c: record.get(c) for c in (*HEAD, *carry, "score")}
    if record.get("predicted_class") is not None:  # multiclass: the top class, then each
        row["predicted_class"] = record["predicted_class"]
        for name, p in (record.get("probabilities") or {}).items():
            row[f"{PROBABILITY_PREFIX}{name}"] = p
    row |= {c: record.get(c) for c in TAIL[1:]}
    missing = list(record.get("missing_features") or ())
    row["missing_features"] = ",".join(missing) if fmt == "csv" else missing
    if source is not None:
        for name, value in source.items():
            if name in carry or name == "event_id":
                continue  # already there, from the event itself
            row[KEPT_PREFIX + name if name in row else name] = value
    return row


def _writer(path: Path, append: bool) -> Any:
    """A writer of row dicts for ``path``'s format (.csv, .jsonl, .parquet)."""
    fmt = format_of(path)
    if fmt == "parquet":
        if append:
            raise ConfigError("--resume needs a .csv or .jsonl output (Parquet cannot append)")
        return _ParquetWriter(path)
    return _TextWriter(path, fmt, append)


class _TextWriter:
    def __init__(self, path: Path, fmt: str, append: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.header = not (append and path.exists() and path.stat().st_size > 0)
        self.f = path.open("a" if append else "w", encoding="utf-8", newline="")
        self.writer: Any = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.fmt == "jsonl":
            self.f.write("".join(json.dumps(r) + "\n" for r in rows))
        else:
            if self.writer is None:
                # Every column of the first chunk (kept input columns can differ by row).
                names = list(dict.fromkeys(k for r in rows for k in r))
                self.writer = csv.DictWriter(self.f, fieldnames=names)
                if self.header:
                    self.writer.writeheader()
            _same_columns(self.path, set(self.writer.fieldnames), rows)
            self.writer.writerows(rows)
        self.f.flush()

    def size(self) -> int:
        """Bytes written so far, on disk (the resume point a progress file records)."""
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.f.tell()

    def close(self) -> None:
        self.f.close()


def _same_columns(path: Path, known: set[str], rows: list[dict[str, Any]]) -> None:
    """A CSV or Parquet file has the columns of its first chunk: a later row with others stops
    the run (exit 1) naming them, rather than dropping them."""
    new = sorted({k for r in rows for k in r} - known)
    if new:
        raise StreamMLError(
            f"{path}: rows past the first chunk have columns it had not ({', '.join(new)}); "
            "a CSV or Parquet output keeps the first chunk's columns: write .jsonl, or give "
            "every input row the same columns"
        )


def _cut_to(path: Path, size: int | None) -> None:
    """Drop what an interrupted run wrote after its last recorded chunk."""
    if size is not None and path.exists() and path.stat().st_size > size:
        os.truncate(path, size)


def _write_progress(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename: a crash leaves the previous progress file or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)


class _ParquetWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        if not rows:
            return
        if self.writer is not None:
            _same_columns(self.path, set(self.writer.schema.names), rows)
            # A missing column is null; values take the first chunk's types.
            self.writer.write_table(pa.Table.from_pylist(rows, schema=self.writer.schema))
            return
        # Every column of the first chunk (from_pylist alone would take the first row's).
        names = list(dict.fromkeys(k for r in rows for k in r))
        table = pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in names})
        # A first chunk where no row missed a feature infers list<null>, which later chunks'
        # names could not be cast to.
        at = table.schema.get_field_index("missing_features")
        if at >= 0 and pa.types.is_list(table.schema.field(at).type):
            column = table.column(at).cast(pa.list_(pa.string()))
            table = table.set_column(at, "missing_features", column)
        self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress_file(out: Path) -> Path:
    return out.with_name(out.name + ".progress.json")


def _rejects_file(out: Path) -> Path:
    return out.with_name(out.name + ".rejects.jsonl")


@click.command("score-file")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions: .csv, .jsonl or .parquet. Refused rows go to OUT.rejects.jsonl.",
)
@click.option("--model-version", help="Score with this version [default: the champion].")
@click.option("--alias", help="Score with the version of this alias, e.g. challenger.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT.progress.json.")
@click.option(
    "--keep-columns",
    is_flag=True,
    help="Also write the input's other columns (a label, say) after the prediction's; one "
    "named like an output column is written as input_<name>.",
)
@click.option(
    "--chunk",
    default=CHUNK,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows read and scored at a time (memory stays bounded by it).",
)
@json_option
@click.pass_context
def score_file(
    ctx: click.Context,
    source: Path,
    out: Path,
    model_version: str | None,
    alias: str | None,
    resume: bool,
    keep_columns: bool,
    chunk: int,
) -> None:
    """Score a file of events (CSV, Parquet or JSON lines) through the worker's stages: the same
    validation, features and model as the stream. Every row ends as a prediction in OUT or a
    refusal, with its reason, in OUT.rejects.jsonl."""

    a = app(ctx)
    s = a.settings
    if model_version and alias:
        raise click.UsageError("give --model-version or --alias, not both")
    format_of(source)
    out_format = format_of(out)
    if not out.parent.is_dir():
        # Refused rather than created: a mistyped path would otherwise grow a folder tree
        # somewhere unexpected, and a resume must find OUT and its progress file there again.
        raise ConfigError(f"{out.parent}: no such folder for --out (create it first)")
    progress_path = _progress_file(out)
    done = 0
    if resume:
        if not progress_path.exists():
            raise ConfigError(f"nothing to resume: {progress_path} does not exist")
        state = json.loads(progress_path.read_text())
        if state["source"] != str(source.resolve()):
            raise ConfigError(f"{progress_path} belongs to {state['source']}, not {source}")
        done = int(state["rows_done"])
        model_version = state["model_version"]
        # Outputs of a chunk are written before its progress: cut what came after the last
        # recorded chunk, or those rows would be written twice.
        _cut_to(out, state.get("out_bytes"))
        _cut_to(_rejects_file(out), state.get("rejects_bytes"))
    registry = MlflowRegistry(s)
    with a.err.status("loading the model..."):
        model = registry.load(alias=alias or "champion", version=model_version)
    serving, _ = build_serving(s, None, model)  # compiled as the worker compiles it
    scorer = Scorer(s, serving, publishes_shadow=False)
    domain = scorer.domain
    record = domain.records[domain.event_record]
    carry = domain.spec.carry
    predictions = _writer(out, resume)
    rejects = _TextWriter(_rejects_file(out), "jsonl", resume)
    counts = {"rows": done, "predictions": 0, "refused": 0}
    started = time.perf_counter()
    tty = sys.stderr.isatty() and not a.json_output
    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=a.err,
        disable=not tty,
    )
    row = 0
    try:
        with bar:
            task = bar.add_task("rows", total=None)
            for rows in read_rows(source, chunk):
                first = row + 1
                row += len(rows)
                if row <= done:
                    continue  # scored by the interrupted run
                if first <= done:
                    rows, first = rows[done - first + 1 :], done + 1
                events, problems = records_from_rows(record, rows, first)
                refused = [
                    {
                        "row": p.row,
                        "event_id": rows[p.row - first].get("event_id"),
                        "stage": "decode",
                        "reason": "bad_value",
                        "field": p.field,
                        "detail": p.detail,
                    }
                    for p in problems
                ]
                bad_rows = {p.row for p in problems}
                numbers = [n for n in range(first, first + len(rows)) if n not in bad_rows]
                scored = scorer.score(events, "score-file") if events else None
                lines = []
                if scored is not None:
                    for i, (n, e) in enumerate(zip(numbers, events, strict=True)):
                        rec = scored.predictions.get(i)
                        if rec is None:
                            r = scored.refused[i]
                            refused.append(
                                {
                                    "row": n,
                                    "event_id": e["event_id"],
                                    "stage": r.stage.value,
                                    "reason": r.reason.value,
                                    "field": r.field,
                                    "detail": r.detail,
                                }
                            )
                            continue
                        kept = rows[n - first] if keep_columns else None
                        lines.append(prediction_row(rec, carry, out_format, kept))
                predictions.write(lines)
                rejects.write(sorted(refused, key=lambda r: r["row"]))
                counts["predictions"] += len(lines)
                counts["refused"] += len(refused)
                counts["rows"] = row
                _write_progress(
                    progress_path,
                    {
                        "source": str(source.resolve()),
                        "rows_done": row,
                        "model_version": scorer.serving.champion.version,
                        "out_bytes": predictions.size() if hasattr(predictions, "size") else None,
                        "rejects_bytes": rejects.size(),
                    },
                )
                bar.update(task, completed=row)
    finally:
        predictions.close()
        rejects.close()
    elapsed = time.perf_counter() - started
    scored_now = counts["predictions"] + counts["refused"]
    result = {
        "source": str(source),
        "out": str(out),
        "rejects": str(_rejects_file(out)),
        "model_version": scorer.serving.champion.version,
        "resumed_from_row": done,
        **counts,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(scored_now / elapsed, 1) if elapsed > 0 else None,
    }

    def render(c: Console) -> None:
        c.print(
            f"{counts['rows']:,} rows: {counts['predictions']:,} predictions in {out}, "
            f"{counts['refused']:,} refused in {_rejects_file(out)} (v{result['model_version']}); "
            f"{scored_now:,} rows in {elapsed:.1f} s "
            f"= {result['rows_per_second'] or 0:,.0f} rows/s",
            highlight=False,
        )

    emit(a, result, render)
