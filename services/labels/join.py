"""The label join and online quality per model version and variant (pure).

A label is matched to the prediction stored for its event (served, and shadow if any); the
per-event log loss of the served champion's score is the error stream a detector watches for
concept drift; quality per (version, variant) is kept over a bounded recent window.
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

from services.labels.store import Stored

WINDOW = 20_000  # labelled events kept per (version, variant) for AUC and log loss


@dataclass(frozen=True, slots=True)
class Joined:
    event_id: str
    partition: int
    offset: int
    outcome: bool  # the label's target (the domain's label.target field)
    served: Stored
    shadow: Stored | None
    label_lag_ms: int  # label_time - event_time
    event_time: int = 0

    @property
    def error(self) -> float:
        """Log loss of the served score."""
        return log_loss_one(self.served.score, self.outcome)


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


def join(
    labels: Sequence[tuple[int, int, Mapping[str, Any]]],
    served: Sequence[Stored | None],
    shadow: Sequence[Stored | None],
    target: str,
    join_key: str = "event_id",
) -> tuple[list[Joined], int]:
    """Labels (partition, offset, record) with their stored predictions; returns the joined
    and how many labels had no stored prediction (expired, or never scored). ``target`` is the
    label's boolean outcome field, ``join_key`` the field naming the event."""
    out, unmatched = [], 0
    for (partition, offset, label), s, sh in zip(labels, served, shadow, strict=True):
        if s is None:
            unmatched += 1
            continue
        out.append(
            Joined(
                label[join_key],
                partition,
                offset,
                bool(label[target]),
                s,
                sh,
                int(label["label_time"]) - int(label["event_time"]),
                int(label["event_time"]),
            )
        )
    return out, unmatched


@dataclass
class QualityBook:
    """Recent (score, outcome) pairs per (version, variant), and per (champion, shadow) pair the
    two scores of the same events: online log loss, AUC, calibration, and the paired comparison
    a promotion needs. Rows are kept and filtered by the event's time (when it was scored, give
    or take the worker's lag), not by when its label happened to be joined.

    The label agent adds while the promotion check reads on an executor thread: one lock
    guards both (a deque mutated during iteration raises). Memory is bounded: ``window`` rows
    per key, and ``prune`` drops the keys of versions that no longer serve."""

    window: int = WINDOW
    pairs: dict[tuple[str, str], deque[tuple[float, bool, int]]] = field(default_factory=dict)
    paired: dict[tuple[str, str], deque[tuple[float, float, bool, int]]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, joined: Sequence[Joined]) -> None:
        with self._lock:
            for j in joined:
                served, shadow, t = j.served, j.shadow, j.event_time
                self._add(served.model_version, served.variant, served.score, j.outcome, t)
                if shadow is None:
                    continue
                self._add(shadow.model_version, "shadow", shadow.score, j.outcome, t)
                if served.variant == "champion":
                    key = (served.model_version, shadow.model_version)
                    if key not in self.paired:
                        self.paired[key] = deque(maxlen=self.window)
                    self.paired[key].append((served.score, shadow.score, j.outcome, t))

    def _add(self, version: str, variant: str, score: float, y: bool, at_ms: int) -> None:
        key = (version, variant)
        if key not in self.pairs:
            self.pairs[key] = deque(maxlen=self.window)
        self.pairs[key].append((score, y, at_ms))

    def quality(self, version: str, variant: str, since_ms: int = 0) -> dict[str, float]:
        """Count, log loss, AUC (both classes needed) and calibration (mean score - rate) of
        the events from ``since_ms`` (event time)."""
        with self._lock:
            kept = self.pairs.get((version, variant), ())
            rows = [(s, y) for s, y, t in kept if t >= since_ms]
        if not rows:
            return {"count": 0.0}
        return _quality(np.array([s for s, _ in rows]), np.array([y for _, y in rows], dtype=float))

    def paired_quality(self, champion: str, challenger: str, since_ms: int = 0) -> dict[str, float]:
        """Both models on the same labelled events (served by ``champion`` as champion and
        shadow-scored by ``challenger``): ``count``, ``champion_log_loss``,
        ``challenger_log_loss`` (and AUCs when both classes are present)."""
        with self._lock:
            kept = self.paired.get((champion, challenger), ())
            rows = [(a, b, y) for a, b, y, t in kept if t >= since_ms]
        if not rows:
            return {"count": 0.0}
        ys = np.array([y for _, _, y in rows], dtype=float)
        out = {"count": float(len(rows))}
        for name, col in (("champion", 0), ("challenger", 1)):
            q = _quality(np.array([r[col] for r in rows]), ys)
            out |= {f"{name}_{k}": v for k, v in q.items() if k != "count"}
        return out

    def series(
        self, version: str, variant: str, last: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``last`` rows as arrays (scores, outcomes as 0/1, event times), in
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


def _quality(scores: np.ndarray, ys: np.ndarray) -> dict[str, float]:
    out = {
        "count": float(len(ys)),
        "log_loss": float(log_losses(scores, ys).mean()),
        "calibration": float(scores.mean() - ys.mean()),
    }
    if 0 < ys.sum() < len(ys):
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(ys, scores))
    return out
