"""The label join and online quality per model version and variant (pure).

A label is matched to the prediction stored for its event (served, and shadow if any); the
per-event loss of the served champion (the task's: log loss, absolute error, log loss of the
true class) is the error stream a detector watches for concept drift; quality per (version,
variant) is kept over a bounded recent window.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.task import BINARY, Task
from services.labels.store import Stored

WINDOW = 20_000  # labelled events kept per (version, variant) for AUC and log loss


@dataclass(frozen=True, slots=True)
class Joined:
    event_id: str
    partition: int
    offset: int
    outcome: Any  # the label's target: a bool, a number, or the class's index (by the task)
    served: Stored
    shadow: Stored | None
    label_lag_ms: int  # label_time - event_time
    event_time: int = 0
    error: float = math.nan  # the served prediction's loss (the task's: ``row_losses``)


def log_loss_one(score: float, outcome: bool) -> float:
    """
    >>> round(log_loss_one(0.8, True), 4), round(log_loss_one(0.8, False), 4)
    (0.2231, 1.6094)
    """
    p = min(max(score, 1e-6), 1 - 1e-6)
    return -math.log(p) if outcome else -math.log(1 - p)


def log_losses(scores: npt.ArrayLike, outcomes: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-event log loss of ``scores`` against 0/1 ``outcomes`` (scores clipped as in
    ``log_loss_one``).

    >>> [round(float(x), 4) for x in log_losses([0.8, 0.8], [1, 0])]
    [0.2231, 1.6094]
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(outcomes, dtype=np.float64)
    return np.asarray(-(y * np.log(p) + (1 - y) * np.log(1 - p)), dtype=np.float64)


def pair_of(task: Task, stored: Stored, outcome: Any) -> tuple[float, float]:
    """What the book keeps of one labelled prediction: (score, 0/1 outcome) for binary,
    (value, target) for regression, (probability of the true class, 1 when the top class was
    right) for multiclass.

    >>> three = Task("multiclass", ("a", "b", "c"))
    >>> pair_of(three, Stored("1", "champion", 0.6, probabilities=(0.1, 0.6, 0.3)), 2)
    (0.3, 0.0)
    """
    if task.kind == "multiclass":
        probs = stored.probabilities
        if len(probs) != task.width:  # a row stored before it carried probabilities
            return math.nan, 0.0
        return probs[outcome], float(max(range(task.width), key=probs.__getitem__) == outcome)
    return stored.score, float(outcome)


def row_losses(task: Task, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The per-event loss of the book's pairs (``pair_of``): log loss (binary), absolute error
    (regression), minus the log of the true class's probability (multiclass).

    >>> row_losses(Task("regression"), [3.0, 5.0], [4.0, 5.0]).tolist()
    [1.0, 0.0]
    """
    if task.kind == "regression":
        return np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    if task.kind == "multiclass":
        return np.asarray(-np.log(np.clip(np.asarray(a, dtype=np.float64), 1e-6, 1.0)))
    return log_losses(a, b)


def join(
    labels: Sequence[tuple[int, int, Mapping[str, Any]]],
    served: Sequence[Stored | None],
    shadow: Sequence[Stored | None],
    target: str,
    join_key: str = "event_id",
    task: Task = BINARY,
) -> tuple[list[Joined], int]:
    """Labels (partition, offset, record) with their stored predictions; returns the joined
    and how many labels had no stored prediction (expired, or never scored). ``target`` is the
    label's outcome field (``task`` says what it holds), ``join_key`` the field naming the
    event."""
    matched = [
        (row, s, sh) for row, s, sh in zip(labels, served, shadow, strict=True) if s is not None
    ]
    outcomes = task.target(label[target] for (_, _, label), _, _ in matched).tolist()
    if task.kind == "binary":
        outcomes = [bool(y) for y in outcomes]
    pairs = [pair_of(task, s, y) for (_, s, _), y in zip(matched, outcomes, strict=True)]
    errors = row_losses(task, [a for a, _ in pairs], [b for _, b in pairs]).tolist()
    out = [
        Joined(
            label[join_key],
            partition,
            offset,
            y,
            s,
            sh,
            int(label["label_time"]) - int(label["event_time"]),
            int(label["event_time"]),
            error,
        )
        for ((partition, offset, label), s, sh), y, error in zip(
            matched, outcomes, errors, strict=True
        )
    ]
    return out, len(labels) - len(matched)


@dataclass
class QualityBook:
    """Recent (score, outcome) pairs per (version, variant), and per (champion, shadow) pair the
    two models' pairs of the same events: online quality (the task's: log loss, AUC and
    calibration; MAE, RMSE and bias; log loss and accuracy), and the paired comparison a
    promotion needs. Rows are kept and filtered by the event's time (when it was scored, give
    or take the worker's lag), not by when its label happened to be joined.

    The label agent adds while the promotion check reads on an executor thread: one lock
    guards both (a deque mutated during iteration raises). Memory is bounded: ``window`` rows
    per key, and ``prune`` drops the keys of versions that no longer serve."""

    window: int = WINDOW
    task: Task = BINARY  # what the pairs hold (``pair_of``) and which quality they give
    pairs: dict[tuple[str, str], deque[tuple[float, float, int]]] = field(default_factory=dict)
    paired: dict[tuple[str, str], deque[tuple[float, float, float, float, int]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, joined: Sequence[Joined]) -> None:
        with self._lock:
            for j in joined:
                served, shadow, t = j.served, j.shadow, j.event_time
                a, y = pair_of(self.task, served, j.outcome)
                self._add(served.model_version, served.variant, a, y, t)
                if shadow is None:
                    continue
                b, y_shadow = pair_of(self.task, shadow, j.outcome)
                self._add(shadow.model_version, "shadow", b, y_shadow, t)
                if served.variant == "champion":
                    key = (served.model_version, shadow.model_version)
                    if key not in self.paired:
                        self.paired[key] = deque(maxlen=self.window)
                    self.paired[key].append((a, b, y, y_shadow, t))

    def _add(self, version: str, variant: str, score: float, y: float, at_ms: int) -> None:
        key = (version, variant)
        if key not in self.pairs:
            self.pairs[key] = deque(maxlen=self.window)
        self.pairs[key].append((score, y, at_ms))

    def quality(self, version: str, variant: str, since_ms: int = 0) -> dict[str, float]:
        """Count and the task's quality (binary: log loss, AUC when both classes are present,
        calibration as mean score - rate) of the events from ``since_ms`` (event time)."""
        with self._lock:
            kept = self.pairs.get((version, variant), ())
            rows = [(s, y) for s, y, t in kept if t >= since_ms]
        if not rows:
            return {"count": 0.0}
        a, ys = np.array([s for s, _ in rows]), np.array([y for _, y in rows], dtype=float)
        return _quality(self.task, a, ys)

    def paired_quality(self, champion: str, challenger: str, since_ms: int = 0) -> dict[str, float]:
        """Both models on the same labelled events (served by ``champion`` as champion and
        shadow-scored by ``challenger``): ``count``, then each quality figure prefixed
        ``champion_`` and ``challenger_`` (``champion_log_loss``, ``challenger_mae``, ...)."""
        with self._lock:
            kept = self.paired.get((champion, challenger), ())
            rows = [r[:4] for r in kept if r[4] >= since_ms]
        if not rows:
            return {"count": 0.0}
        table = np.array(rows, dtype=float)
        out = {"count": float(len(rows))}
        for name, col in (("champion", 0), ("challenger", 1)):
            q = _quality(self.task, table[:, col], table[:, col + 2])
            out |= {f"{name}_{k}": v for k, v in q.items() if k != "count"}
        return out

    def series(
        self, version: str, variant: str, last: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``last`` rows as arrays (the pairs of ``pair_of`` and event times), in
        event-time order."""
        with self._lock:
            kept = list(self.pairs.get((version, variant), ()))
        kept.sort(key=lambda r: r[2])
        kept = kept[-last:]
        return (
            np.array([r[0] for r in kept], dtype=float),
            np.array([r[1] for r in kept], dtype=float),
            np.array([r[2] for r in kept], dtype=np.int64),
        )

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self.pairs)

    def prune(self, serving: set[str]) -> list[tuple[str, str]]:
        """Forget versions that no longer serve; returns the (version, variant) keys dropped
        (their gauge series go with them)."""
        with self._lock:
            dropped = [k for k in self.pairs if k[0] not in serving]
            for key in dropped:
                del self.pairs[key]
            for key in [k for k in self.paired if not set(k) <= serving]:
                del self.paired[key]
        return sorted(dropped)

    def rows(self) -> int:
        with self._lock:
            return sum(len(d) for d in self.pairs.values()) + sum(
                len(d) for d in self.paired.values()
            )


def _quality(task: Task, scores: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    """The task's online quality of the book's pairs (``pair_of``).

    >>> _quality(Task("regression"), np.array([3.0, 5.0]), np.array([4.0, 5.0]))["bias"]
    -0.5
    """
    n = float(len(ys))
    if task.kind == "regression":
        err = scores - ys
        return {
            "count": n,
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "bias": float(err.mean()),  # mean prediction - mean target
        }
    if task.kind == "multiclass":
        known = np.isfinite(scores)  # rows stored before predictions carried probabilities
        return {
            "count": n,
            "log_loss": float(row_losses(task, scores[known], ys[known]).mean()),
            "accuracy": float(ys.mean()),
        }
    out = {
        "count": n,
        "log_loss": float(log_losses(scores, ys).mean()),
        "calibration": float(scores.mean() - ys.mean()),
    }
    if 0 < ys.sum() < len(ys):
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(ys, scores))
    return out
