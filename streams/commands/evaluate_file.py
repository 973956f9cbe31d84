"""`streamscore evaluate-file SCORED`: the domain task's metrics of a scored file, against the
label column it kept (`score-file --keep-columns`), by the same definitions training uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt
from rich.console import Console

from services.codec.table import convert
from services.core.errors import ConfigError
from services.domain.config import Domain, domain_of
from services.training.train import evaluate_task, metrics_line
from streams.commands.common import app, emit, json_option
from streams.commands.score_file import KEPT_PREFIX, PROBABILITY_PREFIX
from streams.files import read_all


def label_column(columns: list[str], target: str) -> str:
    """The column holding the label: ``input_<target>`` when `score-file` renamed an input
    column named like one of its own (a target called ``score``, say), else ``target``.

    >>> label_column(["event_id", "score", "input_score"], "score")
    'input_score'
    >>> label_column(["event_id", "score", "late"], "late")
    'late'
    """
    for name in (KEPT_PREFIX + target, target):
        if name in columns:
            return name
    raise ConfigError(
        f"no label column {target!r} among the file's columns: give --target, or score a file "
        "that has it with --keep-columns"
    )


def _label_type(domain: Domain) -> Any:
    """The Avro type of the label's target, which every cell of the column is read as."""
    fields = domain.records[domain.label.record].source["fields"]
    return next(f["type"] for f in fields if f["name"] == domain.label.target)


def _numbers(
    scored: Path, rows: list[dict[str, Any]], columns: list[str]
) -> npt.NDArray[np.float64]:
    """The model's outputs, a row per scored row and a column per name in ``columns``.

    Raises:
        ConfigError: a cell that is not a finite number (exit 2, naming row and column).
    """
    out = np.empty((len(rows), len(columns)), dtype=np.float64)
    for n, row in enumerate(rows, 1):
        for j, name in enumerate(columns):
            cell: Any = row.get(name)  # a file's cell: text, a number or nothing
            try:
                out[n - 1, j] = value = float(cell)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{scored}: row {n}, {name}: {cell!r} is not a number") from exc
            if not np.isfinite(value):
                raise ConfigError(f"{scored}: row {n}, {name}: {cell!r} is not a finite number")
    return out


@click.command("evaluate-file")
@click.argument("scored", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--target",
    help="The label column [default: the domain's label target]; its cells are read as the "
    "target's type.",
)
@json_option
@click.pass_context
def evaluate_file(ctx: click.Context, scored: Path, target: str | None) -> None:
    """The task's metrics of a file `score-file --keep-columns` wrote, against its label column:
    log loss, AUC and ECE (binary); MAE and RMSE (regression); log loss and accuracy
    (multiclass); and which of them is the loss to compare (lower is better). A missing column,
    an unreadable label or output (score, class probability) or no rows exit 2."""
    a = app(ctx)
    domain = domain_of(a.settings)
    task = domain.task
    rows = read_all(scored)
    if not rows:
        raise ConfigError(f"{scored}: no scored rows to evaluate")
    columns = list(rows[0])
    column = label_column(columns, target or domain.label.target)
    kind = _label_type(domain)
    values: list[Any] = []
    for n, row in enumerate(rows, 1):
        try:
            values.append(convert(kind, row.get(column)))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{scored}: row {n}, {column}: {exc}") from exc
    try:
        y = task.target(values)
    except ValueError as exc:
        raise ConfigError(f"{scored}: {column}: {exc}") from exc
    if task.kind == "multiclass":
        wanted = [PROBABILITY_PREFIX + c for c in task.classes]
        absent = [w for w in wanted if w not in columns]
        if absent:
            raise ConfigError(
                f"{scored}: no {', '.join(absent)}: a multiclass file has one probability "
                f"column per class ({task.describe()})"
            )
    else:
        if "score" not in columns:
            raise ConfigError(f"{scored}: no score column: evaluate a file score-file wrote")
        wanted = ["score"]
    outputs = _numbers(scored, rows, wanted)
    if task.kind != "multiclass":
        outputs = outputs[:, 0]
    metrics = evaluate_task(task, y, outputs)
    result = {
        "file": str(scored),
        "task": task.kind,
        "label_column": column,
        "rows": len(rows),
        "loss": task.loss,
        "metrics": metrics,
    }

    def render(c: Console) -> None:
        c.print(
            f"{scored}: {len(rows):,} rows, {task.describe()}: {metrics_line(metrics, '')}",
            highlight=False,
            soft_wrap=True,  # one line, whatever the width: a result to grep
        )

    emit(a, result, render)
