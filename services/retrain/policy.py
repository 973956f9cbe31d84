"""When to retrain, and when to promote what was trained (pure: time comes in as arguments).

Retrain: one error-drift signal (labels say the model got worse: concept drift) is enough;
input drift (scores or features moved) needs signals from ``min_partitions`` partitions within
the cooldown window, so one odd partition does not retrain the model. After a request, further
signals only accumulate until the cooldown ends (debounce).

Promote: after at least ``min_shadow_seconds`` in shadow and ``min_labels`` labelled events
for both, the challenger is promoted when its online log loss beats the champion's on the same
events by ``margin``; otherwise it stays challenger and the decision is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DriftAggregator:
    cooldown_ms: int
    min_partitions: int
    last_request_ms: int | None = None
    pending: list[Mapping[str, Any]] = field(default_factory=list)

    def add(self, signal: Mapping[str, Any], now_ms: int) -> list[Mapping[str, Any]] | None:
        """Record a DriftSignal; returns the signals that justify a retrain now, or None.

        >>> agg = DriftAggregator(cooldown_ms=1000, min_partitions=2)
        >>> s = lambda p, sig="score": {"signal": sig, "partition": p, "detected_at": 0}
        >>> agg.add(s(0), 10) is None, len(agg.add(s(1), 20))
        (True, 2)
        >>> agg.add(s(0, "error"), 500) is None   # in the cooldown: accumulates
        True
        >>> len(agg.add(s(0, "error"), 1100))      # cooldown over: one error signal suffices
        1
        """
        self.pending = [s for s in self.pending if now_ms - _at(s) <= self.cooldown_ms]
        self.pending.append(signal)
        if self.last_request_ms is not None and now_ms - self.last_request_ms < self.cooldown_ms:
            return None
        errors = [s for s in self.pending if s["signal"] == "error"]
        partitions = {s["partition"] for s in self.pending if s["signal"] != "error"}
        if errors or len(partitions) >= self.min_partitions:
            evidence, self.pending = self.pending, []
            self.last_request_ms = now_ms
            return evidence
        return None


def _at(signal: Mapping[str, Any]) -> int:
    return int(signal.get("detected_at", 0))


def retrain_request(
    model_name: str,
    base_version: str | None,
    evidence: list[Mapping[str, Any]],
    window_ms: int,
    now_ms: int,
    requested_by: str,
) -> dict[str, Any]:
    """The RetrainRequest record for ``evidence`` (its id is deterministic)."""
    ids = [str(s.get("signal_id", "")) for s in evidence]
    request_id = hashlib.sha256("\x1f".join([model_name, *ids]).encode()).hexdigest()[:32]
    kinds = {s["signal"] for s in evidence}
    return {
        "request_id": request_id,
        "model_name": model_name,
        "reason": "drift: " + ", ".join(sorted(kinds)),
        "base_model_version": base_version,
        "drift_signal_ids": ids,
        "window_start": now_ms - window_ms,
        "window_end": now_ms,
        "requested_by": requested_by,
        "requested_at": now_ms,
    }


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    min_shadow_ms: int
    min_labels: int
    margin: float  # log loss improvement required

    def decide(
        self,
        shadow_started_ms: int,
        now_ms: int,
        champion: Mapping[str, float],
        challenger: Mapping[str, float],
    ) -> tuple[str, str]:
        """("wait" | "promote" | "keep", why).

        >>> pol = PromotionPolicy(min_shadow_ms=1000, min_labels=100, margin=0.01)
        >>> good = {"count": 500, "log_loss": 0.40}
        >>> pol.decide(0, 500, {"count": 500, "log_loss": 0.5}, good)[0]
        'wait'
        >>> pol.decide(0, 2000, {"count": 500, "log_loss": 0.5}, good)[0]
        'promote'
        >>> pol.decide(0, 2000, {"count": 500, "log_loss": 0.405}, good)[0]
        'keep'
        """
        if now_ms - shadow_started_ms < self.min_shadow_ms:
            return "wait", "minimum shadow period not over"
        n = min(champion.get("count", 0), challenger.get("count", 0))
        if n < self.min_labels:
            return "wait", f"{n:.0f} labelled events for both, need {self.min_labels}"
        gain = champion["log_loss"] - challenger["log_loss"]
        why = (
            f"online log loss champion {champion['log_loss']:.4f} vs challenger "
            f"{challenger['log_loss']:.4f} over {n:.0f} labelled events (margin {self.margin})"
        )
        return ("promote" if gain >= self.margin else "keep"), why
