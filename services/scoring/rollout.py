"""Rollout state and its pure rules: who serves, canary routing, shadow agreement, alias history.

The state lives in the MLflow registry (aliases ``champion``/``challenger`` plus two registered-
model tags); this module only computes with it, so every rule here is unit-tested without MLflow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["none", "shadow", "canary"]
MODES: tuple[Mode, ...] = ("none", "shadow", "canary")
CANARY_BUCKETS = 10_000  # routing resolution: 0.01 percentage points


@dataclass(frozen=True, slots=True)
class RolloutState:
    """Which versions serve and how. ``challenger`` is only used in shadow or canary mode."""

    champion: str | None
    challenger: str | None = None
    mode: Mode = "none"
    canary_percent: float = 0.0

    def active_challenger(self) -> str | None:
        return self.challenger if self.mode != "none" else None

    def describe(self) -> str:
        """
        >>> RolloutState("3", "4", "canary", 10.0).describe()
        'champion v3, canary v4 at 10%'
        """
        head = f"champion v{self.champion}" if self.champion else "no champion"
        if self.mode == "shadow" and self.challenger:
            return f"{head}, shadow v{self.challenger}"
        if self.mode == "canary" and self.challenger:
            return f"{head}, canary v{self.challenger} at {self.canary_percent:g}%"
        return head


def canary_bucket(key: str) -> int:
    """A user's fixed bucket in [0, 10000): a hash, so the same user always lands in it.

    >>> canary_bucket("u1") == canary_bucket("u1")
    True
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % CANARY_BUCKETS


def in_canary(keys: Sequence[str], percent: float) -> list[bool]:
    """Which users the challenger serves: sticky per user, and raising the percentage only
    adds users (a user in the 5% canary is still in the 10% one).

    >>> in_canary(["a", "b"], 0.0), in_canary(["a", "b"], 100.0)
    ([False, False], [True, True])
    """
    cut = round(percent * CANARY_BUCKETS / 100)
    return [canary_bucket(u) < cut for u in keys]


@dataclass(frozen=True, slots=True)
class Agreement:
    """Champion vs shadow on the same events."""

    n: int
    mean_abs_diff: float
    rank_correlation: float  # Spearman; NaN when either side is constant
    decision_flips: int  # events on different sides of the threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(
    champion: npt.NDArray[np.float64], shadow: npt.NDArray[np.float64], threshold: float | None
) -> Agreement:
    """Mean absolute difference, Spearman rank correlation, decision flips at ``threshold``.

    Outputs of one row each (a probability or a value): without a threshold (regression) no
    decision is made and none flips. Rows of class probabilities (multiclass): the difference
    is half the L1 distance per row, the correlation is over the probabilities, and a flip is a
    change of the top class.

    >>> a = agreement(np.array([0.1, 0.4, 0.9]), np.array([0.2, 0.6, 0.8]), 0.5)
    >>> (a.n, round(a.mean_abs_diff, 3), a.rank_correlation, a.decision_flips)
    (3, 0.133, 1.0, 1)
    >>> a = agreement(np.array([[0.6, 0.3, 0.1]]), np.array([[0.3, 0.6, 0.1]]), None)
    >>> (round(a.mean_abs_diff, 3), a.decision_flips)
    (0.3, 1)
    """
    n = len(champion)
    if n == 0:
        return Agreement(0, float("nan"), float("nan"), 0)
    if champion.ndim == 2:
        flips = int((champion.argmax(axis=1) != shadow.argmax(axis=1)).sum())
        mad = float(np.abs(champion - shadow).sum(axis=1).mean() / 2)
        return Agreement(n, mad, _spearman(champion.ravel(), shadow.ravel()), flips)
    flips = (
        0 if threshold is None else int(((champion >= threshold) != (shadow >= threshold)).sum())
    )
    mad = float(np.abs(champion - shadow).mean())
    return Agreement(n, mad, _spearman(champion, shadow), flips)


def _spearman(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks with ties averaged (as Spearman needs).

    >>> _ranks(np.array([0.3, 0.1, 0.3])).tolist()
    [1.5, 0.0, 1.5]
    """
    ranks = np.empty(len(a))
    ranks[np.argsort(a, kind="mergesort")] = np.arange(len(a))
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return np.asarray(np.bincount(inverse, ranks)[inverse] / counts[inverse], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One entry of the alias history: what moved, from where to where, why, who, when."""

    event_type: str  # promoted, rolled_back, shadow_started, canary_started, rollout_stopped
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    at_ms: int
    canary_percent: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AliasChange:
        return cls(**json.loads(text))


def plan_promote(
    state: RolloutState, version: str | None, reason: str, actor: str, now_ms: int
) -> tuple[RolloutState, AliasChange]:
    """Make ``version`` (default: the challenger) champion and end any rollout.

    >>> new, change = plan_promote(RolloutState("1", "2", "canary", 10), None, "ok", "me", 0)
    >>> new, (change.from_version, change.to_version)
    (RolloutState(champion='2', challenger=None, mode='none', canary_percent=0.0), ('1', '2'))
    """
    target = version or state.challenger
    if target is None:
        raise ValueError("nothing to promote: no version given and no challenger")
    if target == state.champion:
        raise ValueError(f"v{target} is already champion")
    change = AliasChange("promoted", "champion", state.champion, target, reason, actor, now_ms)
    return RolloutState(target), change


def plan_rollback(
    state: RolloutState,
    history: Sequence[AliasChange],
    version: str | None,
    reason: str,
    actor: str,
    now_ms: int,
) -> tuple[RolloutState, AliasChange]:
    """Back to the last known good.

    During a shadow or canary rollout (and no ``version`` given) that means stopping it: the
    champion keeps serving everyone. Otherwise the champion goes back to ``version``, or to
    the one before it (from the alias history); a rollout in progress stops either way.

    >>> h = [AliasChange("promoted", "champion", "1", "2", "", "me", 0)]
    >>> plan_rollback(RolloutState("2", "3", "canary", 10), h, None, "bad", "me", 1)[0]
    RolloutState(champion='2', challenger=None, mode='none', canary_percent=0.0)
    >>> plan_rollback(RolloutState("2"), h, None, "bad", "me", 1)[0]
    RolloutState(champion='1', challenger=None, mode='none', canary_percent=0.0)
    """
    if version is None and state.mode != "none":
        change = AliasChange(
            "rolled_back", "challenger", state.challenger, None, reason, actor, now_ms
        )
        return RolloutState(state.champion), change
    target = version or previous_champion(state.champion, history)
    if target is None:
        raise ValueError(f"no earlier champion than v{state.champion} in the alias history")
    if target == state.champion and state.mode == "none":
        raise ValueError(f"v{target} is already champion")
    change = AliasChange("rolled_back", "champion", state.champion, target, reason, actor, now_ms)
    return RolloutState(target), change


def previous_champion(current: str | None, history: Sequence[AliasChange]) -> str | None:
    """The champion before ``current``: the newest champion move that landed on ``current``
    says where it came from; a version once rolled back from is never a target again.

    >>> h = [AliasChange("promoted", "champion", "1", "2", "", "", 0),
    ...      AliasChange("promoted", "champion", "2", "3", "", "", 1)]
    >>> previous_champion("3", h), previous_champion("2", h), previous_champion("1", h)
    ('2', '1', None)
    >>> back = AliasChange("rolled_back", "champion", "3", "2", "", "", 2)
    >>> previous_champion("2", [*h, back])
    '1'
    """
    bad = {
        c.from_version for c in history if c.event_type == "rolled_back" and c.alias == "champion"
    }
    for change in sorted(history, key=lambda c: c.at_ms, reverse=True):
        if (
            change.alias == "champion"
            and change.to_version == current
            and change.from_version
            and change.from_version not in bad
        ):
            return change.from_version
    return None


def plan_rollout(
    state: RolloutState,
    version: str,
    mode: Mode,
    percent: float,
    reason: str,
    actor: str,
    now_ms: int,
) -> tuple[RolloutState, AliasChange]:
    """Put ``version`` in shadow, or in canary at ``percent``; ``mode='none'`` stops a rollout.

    >>> plan_rollout(RolloutState("1"), "2", "canary", 10, "try", "me", 0)[0].describe()
    'champion v1, canary v2 at 10%'
    """
    if mode != "none" and version == state.champion:
        raise ValueError(f"v{version} is the champion; roll out a different version")
    if mode == "canary" and not 0 < percent <= 100:
        raise ValueError(f"canary percent must be in (0, 100], not {percent}")
    if mode == "none":
        change = AliasChange(
            "rollout_stopped", "challenger", state.challenger, None, reason, actor, now_ms
        )
        return RolloutState(state.champion), change
    event = "shadow_started" if mode == "shadow" else "canary_started"
    pct = percent if mode == "canary" else 0.0
    change = AliasChange(event, "challenger", state.challenger, version, reason, actor, now_ms, pct)
    return RolloutState(state.champion, version, mode, pct), change
