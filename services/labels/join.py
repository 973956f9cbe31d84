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

from services.labels.store import Stored

WINDOW = 20_000  # labelled events kept per (version, variant) for AUC and log loss


@dataclass(frozen=True, slots=True)
class Joined:
    event_id: str
    partition: int
    offset: int
    engaged: bool
    served: Stored
    shadow: Stored | None
    label_lag_ms: int  # label_time - event_time

    @property
    def error(self) -> float:
        """Log loss of the served score."""
        return log_loss_one(self.served.score, self.engaged)


def log_loss_one(score: float, engaged: bool) -> float:
    """
    >>> round(log_loss_one(0.8, True), 4), round(log_loss_one(0.8, False), 4)
    (0.2231, 1.6094)
    """
    p = min(max(score, 1e-6), 1 - 1e-6)
    return -math.log(p) if engaged else -math.log(1 - p)


def join(
    labels: Sequence[tuple[int, int, Mapping[str, Any]]],
    served: Sequence[Stored | None],
    shadow: Sequence[Stored | None],
) -> tuple[list[Joined], int]:
    """Labels (partition, offset, record) with their stored predictions; returns the joined
    and how many labels had no stored prediction (expired, or never scored)."""
    out, unmatched = [], 0
    for (partition, offset, label), s, sh in zip(labels, served, shadow, strict=True):
        if s is None:
            unmatched += 1
            continue
        out.append(
            Joined(
                label["event_id"],
                partition,
                offset,
                bool(label["engaged"]),
                s,
                sh,
                int(label["label_time"]) - int(label["event_time"]),
            )
        )
    return out, unmatched


@dataclass
class QualityBook:
    """Recent (score, outcome) pairs per (version, variant): online log loss, AUC, calibration.

    The label agent adds while the promotion check reads on an executor thread: one lock
    guards both (a deque mutated during iteration raises)."""

    window: int = WINDOW
    pairs: dict[tuple[str, str], deque[tuple[float, bool, int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, joined: Sequence[Joined], now_ms: int) -> None:
        with self._lock:
            for j in joined:
                served = j.served
                self._add(served.model_version, served.variant, served.score, j.engaged, now_ms)
                if j.shadow is not None:
                    self._add(j.shadow.model_version, "shadow", j.shadow.score, j.engaged, now_ms)

    def _add(self, version: str, variant: str, score: float, y: bool, now_ms: int) -> None:
        key = (version, variant)
        if key not in self.pairs:
            self.pairs[key] = deque(maxlen=self.window)
        self.pairs[key].append((score, y, now_ms))

    def quality(self, version: str, variant: str, since_ms: int = 0) -> dict[str, float]:
        """Count, log loss, AUC (both classes needed) and calibration (mean score - rate)."""
        with self._lock:
            kept = self.pairs.get((version, variant), ())
            rows = [(s, y) for s, y, t in kept if t >= since_ms]
        if not rows:
            return {"count": 0.0}
        scores = np.array([s for s, _ in rows])
        ys = np.array([y for _, y in rows], dtype=np.float64)
        p = np.clip(scores, 1e-6, 1 - 1e-6)
        out = {
            "count": float(len(rows)),
            "log_loss": float(-(ys * np.log(p) + (1 - ys) * np.log(1 - p)).mean()),
            "calibration": float(scores.mean() - ys.mean()),
        }
        if 0 < ys.sum() < len(ys):
            from sklearn.metrics import roc_auc_score

            out["auc"] = float(roc_auc_score(ys, scores))
        return out

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self.pairs)
