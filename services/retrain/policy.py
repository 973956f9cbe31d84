"""When to retrain, and when to promote what was trained (pure: time comes in as arguments).

Retrain: one error-drift signal (labels say the model got worse: concept drift) is enough;
input drift (scores or features moved) needs signals from ``min_partitions`` partitions within
the cooldown window, so one odd partition does not retrain the model. After a request, further
signals only accumulate until the cooldown ends (debounce).

A request's window starts at the change point the detector placed (not "the last hour", which
after a drift is mostly the old concept). A trained challenger is shadowed only when it does not
lose to the champion on the newest slice of that window (the offline gate).

Promote: after at least ``min_shadow_seconds`` in shadow and ``min_labels`` labelled events
scored by both models, the challenger is promoted when its online log loss beats the champion's
on those same events by ``margin``; otherwise it stays challenger and the decision is recorded.

The absolute trigger: the champion's online log loss above its own holdout log loss by a
margin requests a retrain even when no detector fired (a model that was never good).

Log loss is unitless and every margin is a quantity of it. A regression model's loss is MAE, in
the label's units, so there each margin is a fraction of the figure it is compared with (the
champion's MAE, or the holdout's for the trigger): 0.05 is "5% worse".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

LOSS_NAMES = {"log_loss": "log loss", "mae": "MAE"}  # how a loss metric is said in a reason
# Losses in the label's units (minutes, euros): a fixed margin made for log loss means nothing
# there, so their margins are a fraction of the figure they are compared with.
RELATIVE_LOSSES = frozenset({"mae"})


def margin_of(loss: str, margin: float, reference: float) -> tuple[float, str]:
    """The margin in ``loss``'s units, and how a reason says it: ``margin`` itself for log
    loss (unitless), ``margin`` times ``reference`` (the champion's or the holdout's figure)
    for MAE.

    >>> margin_of("log_loss", 0.01, 0.5)
    (0.01, 'margin 0.01')
    >>> margin_of("mae", 0.05, 2.0)
    (0.1, 'margin 0.05 of 2.0000 = 0.1')
    """
    if loss not in RELATIVE_LOSSES:
        return margin, f"margin {margin:g}"
    absolute = margin * abs(reference)
    return absolute, f"margin {margin:g} of {reference:.4f} = {absolute:g}"


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

    def allow(self, now_ms: int) -> bool:
        """A request without detector evidence (the quality trigger): allowed outside the
        cooldown, which it then starts.

        >>> agg = DriftAggregator(cooldown_ms=1000, min_partitions=2)
        >>> agg.allow(0), agg.allow(500), agg.allow(1500)
        (True, False, True)
        """
        if self.last_request_ms is not None and now_ms - self.last_request_ms < self.cooldown_ms:
            return False
        self.last_request_ms = now_ms
        return True

    def disarm(self) -> None:
        """The request this cooldown belongs to failed: the next signal may ask again."""
        self.last_request_ms = None


def _at(signal: Mapping[str, Any]) -> int:
    return int(signal.get("detected_at", 0))


def change_point(evidence: list[Mapping[str, Any]], margin_ms: int) -> int | None:
    """Where the new concept starts: the earliest ``time_start`` among the signals, less the
    margin; None when no signal places a change (a manual or quality-triggered request).

    >>> change_point([{"time_start": 5000}, {"time_start": 4000}, {"time_start": 0}], 500)
    3500
    >>> change_point([{"signal": "error"}], 500) is None
    True
    """
    starts = [int(s["time_start"]) for s in evidence if int(s.get("time_start") or 0) > 0]
    return min(starts) - margin_ms if starts else None


def retrain_request(
    model_name: str,
    base_version: str | None,
    evidence: list[Mapping[str, Any]],
    window_ms: int,
    now_ms: int,
    requested_by: str,
    *,
    margin_ms: int = 0,
    reason: str | None = None,
    window_start_ms: int | None = None,
) -> dict[str, Any]:
    """The RetrainRequest record for ``evidence`` (its id is deterministic).

    The window starts at the change point the signals place (less ``margin_ms``), else at
    ``window_start_ms``, else ``window_ms`` before now: training on the new concept, not on a
    window that is mostly the old one.

    >>> r = retrain_request("m", "1", [{"signal": "error", "time_start": 9000}], 5000, 10000,
    ...                     "t", margin_ms=1000)
    >>> r["window_start"], r["reason"]
    (8000, 'drift: error')
    >>> retrain_request("m", "1", [], 5000, 10000, "ops", reason="manual: x")["window_start"]
    5000
    """
    ids = [str(s.get("signal_id", "")) for s in evidence]
    salt = [] if evidence else [str(now_ms), reason or ""]
    request_id = hashlib.sha256("\x1f".join([model_name, *ids, *salt]).encode()).hexdigest()[:32]
    kinds = {s["signal"] for s in evidence}
    start = change_point(evidence, margin_ms)
    if start is None:
        start = window_start_ms if window_start_ms is not None else now_ms - window_ms
    return {
        "request_id": request_id,
        "model_name": model_name,
        "reason": reason or "drift: " + ", ".join(sorted(kinds)),
        "base_model_version": base_version,
        "drift_signal_ids": ids,
        "window_start": start,
        "window_end": now_ms,
        "requested_by": requested_by,
        "requested_at": now_ms,
    }


def offline_gate(
    metrics: Mapping[str, float],
    margin: float,
    ece_margin: float | None = None,
    loss: str = "log_loss",
) -> tuple[bool, str]:
    """Shadow a challenger only when it does not lose to the champion on the same holdout
    rows (the newest of the window) by more than ``margin`` in the task's ``loss`` (log loss;
    MAE for regression, where ``margin`` is a fraction of the champion's MAE), nor, with
    ``ece_margin`` set, by more than that in expected calibration error (binary).

    >>> offline_gate({"holdout_log_loss": 0.60, "champion_holdout_log_loss": 0.70}, 0.0)[0]
    True
    >>> offline_gate({"holdout_log_loss": 0.4376, "champion_holdout_log_loss": 0.4325}, 0.0)
    (False, 'holdout log loss 0.4376 vs champion 0.4325 on the same rows (margin 0)')
    >>> offline_gate({"holdout_log_loss": 0.5}, 0.0)[0]   # no champion to lose to
    True
    >>> offline_gate({"holdout_log_loss": 0.5, "champion_holdout_log_loss": 0.6,
    ...     "holdout_ece": 0.09, "champion_holdout_ece": 0.02}, 0.0, 0.05)
    (False, 'holdout ECE 0.0900 vs champion 0.0200 on the same rows (ECE margin 0.05)')
    >>> offline_gate({"holdout_mae": 2.15, "champion_holdout_mae": 2.0}, 0.05, loss="mae")
    (False, 'holdout MAE 2.1500 vs champion 2.0000 on the same rows (margin 0.05 of 2.0000 = 0.1)')
    """
    name = LOSS_NAMES.get(loss, loss)
    mine = metrics[f"holdout_{loss}"]
    theirs = metrics.get(f"champion_holdout_{loss}")
    if theirs is None or theirs != theirs:  # no champion (or NaN)
        return True, f"holdout {name} {mine:.4f}, no champion to compare with"
    allowed, said = margin_of(loss, margin, theirs)
    why = f"holdout {name} {mine:.4f} vs champion {theirs:.4f} on the same rows ({said})"
    if mine > theirs + allowed:
        return False, why
    gate = ece_gate(metrics, ece_margin) if ece_margin is not None else None
    if gate is not None:
        if not gate[0]:
            return gate
        why += f"; {gate[1]}"
    return True, why


def ece_gate(metrics: Mapping[str, float], ece_margin: float) -> tuple[bool, str] | None:
    """The calibration gate: the holdout's expected calibration error must not exceed the
    champion's on the same rows by more than ``ece_margin``; None when either is unknown.

    >>> ece_gate({"holdout_ece": 0.09, "champion_holdout_ece": 0.02}, 0.05)
    (False, 'holdout ECE 0.0900 vs champion 0.0200 on the same rows (ECE margin 0.05)')
    >>> ece_gate({"holdout_ece": 0.03, "champion_holdout_ece": 0.02}, 0.05)
    (True, 'ECE 0.0300 vs 0.0200')
    """
    ece, champion_ece = metrics.get("holdout_ece"), metrics.get("champion_holdout_ece")
    if ece is None or champion_ece is None:
        return None
    if ece > champion_ece + ece_margin:
        return False, (
            f"holdout ECE {ece:.4f} vs champion {champion_ece:.4f} on the same rows "
            f"(ECE margin {ece_margin:g})"
        )
    return True, f"ECE {ece:.4f} vs {champion_ece:.4f}"


def quality_trigger(
    online: Mapping[str, float],
    holdout_log_loss: float | None,
    min_events: int,
    margin: float,
    loss: str = "log_loss",
) -> str | None:
    """The absolute trigger: why to retrain when the champion's online ``loss`` (log loss;
    MAE for regression, where ``margin`` is a fraction of the holdout MAE) exceeds its own
    holdout figure by more than ``margin`` over at least ``min_events`` labelled events; None
    otherwise (also when the holdout figure is unknown).

    >>> quality_trigger({"count": 2000, "log_loss": 0.80}, 0.55, 1000, 0.1)
    'quality: online log loss 0.8000 over 2000 events vs holdout 0.5500 (margin 0.1)'
    >>> quality_trigger({"count": 2000, "log_loss": 0.60}, 0.55, 1000, 0.1) is None
    True
    >>> quality_trigger({"count": 500, "log_loss": 0.90}, 0.55, 1000, 0.1) is None
    True
    >>> quality_trigger({"count": 2000, "mae": 2.1}, 2.0, 1000, 0.1) is None  # within 10%
    True
    """
    n = online.get("count", 0)
    if holdout_log_loss is None or n < min_events or loss not in online:
        return None
    allowed, said = margin_of(loss, margin, holdout_log_loss)
    if online[loss] <= holdout_log_loss + allowed:
        return None
    return (
        f"quality: online {LOSS_NAMES.get(loss, loss)} {online[loss]:.4f} over {n:.0f} events "
        f"vs holdout {holdout_log_loss:.4f} ({said})"
    )


@dataclass(frozen=True, slots=True)
class PromotionPolicy:
    min_shadow_ms: int
    min_labels: int
    margin: float  # improvement of the loss required (for MAE: a fraction of the champion's)
    loss: str = "log_loss"  # the task's: log loss, or MAE for regression

    def decide(
        self, shadow_started_ms: int, now_ms: int, paired: Mapping[str, float]
    ) -> tuple[str, str]:
        """("wait" | "promote" | "keep", why), from the two models' log loss on the same
        labelled events (those with both a served and a shadow score: ``paired`` holds
        ``count``, ``champion_log_loss`` and ``challenger_log_loss``).

        >>> pol = PromotionPolicy(min_shadow_ms=1000, min_labels=100, margin=0.01)
        >>> good = {"count": 500, "champion_log_loss": 0.5, "challenger_log_loss": 0.4}
        >>> pol.decide(0, 500, good)[0], pol.decide(0, 2000, good)[0]
        ('wait', 'promote')
        >>> pol.decide(0, 2000, good | {"challenger_log_loss": 0.495})[0]
        'keep'
        >>> pol.decide(0, 2000, good | {"count": 99})[0]
        'wait'
        >>> mae = PromotionPolicy(1000, 100, margin=0.01, loss="mae")
        >>> mae.decide(0, 2000, {"count": 500, "champion_mae": 2.0, "challenger_mae": 1.99})[0]
        'keep'
        """
        if now_ms - shadow_started_ms < self.min_shadow_ms:
            return "wait", "minimum shadow period not over"
        n = paired.get("count", 0)
        if n < self.min_labels:
            return "wait", f"{n:.0f} labelled events scored by both, need {self.min_labels}"
        champion, challenger = paired[f"champion_{self.loss}"], paired[f"challenger_{self.loss}"]
        required, said = margin_of(self.loss, self.margin, champion)
        why = (
            f"online {LOSS_NAMES.get(self.loss, self.loss)} champion {champion:.4f} vs "
            f"challenger {challenger:.4f} on the same {n:.0f} labelled events ({said})"
        )
        return ("promote" if champion - challenger >= required else "keep"), why


def change_index(errors: npt.NDArray[np.float64], threshold: float = 1.36) -> int:
    """Where the mean of ``errors`` (in time order) most likely changed: the CUSUM estimate
    (the split maximising |S_k - k/n S_n|), or 0 when the change is not significant
    (normalised statistic below ``threshold``, the 5% Kolmogorov bound): the whole window.

    ADWIN places a change at the boundary of its buckets, which grow to thousands of events, so
    its start can lie far before the change; with the labelled window in hand, this places it
    at one event.

    >>> change_index(np.r_[np.zeros(300), np.ones(100)] + np.tile([0.1, -0.1], 200))
    300
    >>> change_index(np.tile([0.5, -0.5], 200))
    0
    """
    n = len(errors)
    if n < 2:
        return 0
    centred = np.cumsum(errors - errors.mean())
    k = int(np.argmax(np.abs(centred[:-1])))
    sd = float(errors.std())
    if sd == 0 or abs(centred[k]) / (sd * np.sqrt(n)) < threshold:
        return 0
    return k + 1
