"""A human-readable drift report: Evidently's data drift (every model input) and prediction
drift (the served score) of a window of served events against a version's training reference.

Evidently is the optional extra ``report`` (``pip install 'streamscore[report]'``), imported
only here and only when a report is built. Which columns drifted is Evidently's own verdict
(the status of its per-column drift test), so the summary and the HTML page never disagree.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.errors import ConfigError
from services.drift.reference import Reference

INSTALL = "pip install 'streamscore[report]'"
SCORE_COLUMN = "score"
MIN_ROWS = 30  # fewer rows on either side and the tests say nothing


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """Evidently's verdict on one column: method, drift score, threshold, drifted or not."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "method": self.method,
            "score": self.score,
            "threshold": self.threshold,
            "drifted": self.drifted,
        }


@dataclass(frozen=True, slots=True)
class DriftSummary:
    reference_rows: int
    current_rows: int
    scored_rows: int  # current rows with a score of the reference's version
    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None  # None: no current row was scored by the version

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "scored_rows": self.scored_rows,
            "drifted_columns": self.drifted,
            "prediction_drifted": self.prediction.drifted if self.prediction else None,
            "columns": [c.to_dict() for c in self.columns],
            "prediction": self.prediction.to_dict() if self.prediction else None,
        }


@contextmanager
def _quiet() -> Iterator[None]:
    """Evidently 0.7 (and plotly, litestar under it) on pandas 3 and numpy 2 warn of
    deprecations in their own code, on import and per column; none of it is ours to fix and
    none changes a result, so those categories are silenced here, and only here."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield


def evidently() -> Any:
    """The ``evidently`` module, or a one-line ConfigError naming the install command."""
    try:
        import pandas.core.dtypes.common as dtypes

        # Evidently 0.7 imports a helper pandas 3 removed, for one legacy test (TestColumnType)
        # no report here runs; the stand-in answers as pandas 2 did for a dtype.
        if not hasattr(dtypes, "infer_dtype_from_object"):
            import pandas as pd

            dtypes.infer_dtype_from_object = lambda d: pd.api.types.pandas_dtype(d).type
        with _quiet():
            import evidently as ev
    except ImportError as exc:
        raise ConfigError(f"the drift report needs Evidently: {INSTALL} ({exc})") from exc
    return ev


def write_report(
    reference: Reference,
    current: npt.NDArray[np.float64],
    current_scores: npt.NDArray[np.float64],
    out: Path,
    columns: Sequence[str] | None = None,
) -> DriftSummary:
    """Evidently's data drift over ``columns`` (default: every model input) and its drift of
    the score, ``current`` against ``reference``, as an HTML page at ``out``.

    ``current`` has the reference's columns in its order; ``current_scores`` is NaN for rows
    the version did not score (they count for data drift only).

    Raises:
        ConfigError: Evidently is not installed, a column is not an input of the version, or a
            side has fewer than ``MIN_ROWS`` rows.
    """
    names = list(reference.names)
    wanted = list(columns) if columns else names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ConfigError(f"not inputs of the model: {', '.join(unknown)} (inputs: {names})")
    if current.shape[1:] != (len(names),) or len(current_scores) != len(current):
        raise ValueError(f"current rows {current.shape} do not match the reference's columns")
    if min(len(current), len(reference.scores)) < MIN_ROWS:
        raise ConfigError(
            f"too few rows for a drift report: {len(current)} in the window, "
            f"{len(reference.scores)} in the reference (at least {MIN_ROWS} each)"
        )
    ev = evidently()
    import pandas as pd

    with _quiet():
        return _run(ev, pd, reference, current, current_scores, out, names, wanted)


def _run(
    ev: Any,
    pd: Any,
    reference: Reference,
    current: npt.NDArray[np.float64],
    current_scores: npt.NDArray[np.float64],
    out: Path,
    names: list[str],
    wanted: list[str],
) -> DriftSummary:
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    def frame(values: npt.NDArray[Any], scores: npt.NDArray[np.float64]) -> Any:
        df = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=names)[wanted]
        df[SCORE_COLUMN] = scores
        return df

    definition = ev.DataDefinition(numerical_columns=[*wanted, SCORE_COLUMN])
    ref = ev.Dataset.from_pandas(frame(reference.values, reference.scores), definition)
    cur = ev.Dataset.from_pandas(frame(current, current_scores), definition)
    scored = int(np.isfinite(current_scores).sum())
    metrics: list[Any] = [DataDriftPreset(columns=wanted)]
    if scored:
        metrics.append(ValueDrift(column=SCORE_COLUMN))
    snapshot = ev.Report(metrics, include_tests=True).run(current_data=cur, reference_data=ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out))
    verdicts = column_verdicts(snapshot.dict())
    return DriftSummary(
        len(reference.scores),
        len(current),
        scored,
        tuple(verdicts[c] for c in wanted if c in verdicts),
        verdicts.get(SCORE_COLUMN) if scored else None,
    )


def column_verdicts(snapshot: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per column, Evidently's value-drift metric and the status of its test (FAIL: drifted).

    >>> snap = {"metrics": [{"id": "m1", "config": {"type": "evidently:metric_v2:ValueDrift",
    ...     "column": "a", "method": "K-S p_value", "threshold": 0.05}, "value": 0.001}],
    ...     "tests": [{"status": "FAIL", "metric_config": {"metric_id": "m1"}}]}
    >>> column_verdicts(snap)["a"].drifted
    True
    """
    status = {t["metric_config"]["metric_id"]: t["status"] for t in snapshot.get("tests", [])}
    out = {}
    for m in snapshot.get("metrics", []):
        config = m.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        column = str(config["column"])
        out[column] = ColumnDrift(
            column,
            str(config.get("method")),
            float(m["value"]),
            float(config.get("threshold") or 0.0),
            status.get(m["id"]) == "FAIL",
        )
    return out
