"""The models a worker serves at one moment, and scoring a batch with them (pure).

``Serving`` is immutable: a hot swap builds a new one between batches and never changes one in
use. ``score_rows`` applies the rollout (canary routing, shadow scoring) and the fallback ladder:
model → the version's stored logistic fallback → its base rate; in a canary, a challenger that
cannot score hands its rows back to the champion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.core.task import BINARY
from services.scoring.compiled import compile_lightgbm
from services.scoring.model import LoadedModel
from services.scoring.rollout import Agreement, Mode, agreement, in_canary


@dataclass(frozen=True)
class Serving:
    """Champion, and the challenger when a shadow or canary rollout is on."""

    champion: LoadedModel
    challenger: LoadedModel | None = None
    mode: Mode = "none"
    canary_percent: float = 0.0

    def __post_init__(self) -> None:
        if self.mode != "none" and self.challenger is None:
            raise ValueError(f"{self.mode} rollout without a challenger")

    def versions(self) -> tuple[str, str | None]:
        return self.champion.version, self.challenger.version if self.challenger else None

    def describe(self) -> str:
        head = f"champion v{self.champion.version}"
        if self.challenger is None or self.mode == "none":
            return head
        if self.mode == "shadow":
            return f"{head}, shadow v{self.challenger.version}"
        return f"{head}, canary v{self.challenger.version} at {self.canary_percent:g}%"


@dataclass(frozen=True, slots=True)
class Scored:
    """Per row: the score served, the version and variant that served it, whether a fallback
    answered; and the shadow's scores when one ran."""

    scores: npt.NDArray[np.float64]
    versions: list[str]
    variants: list[str]
    degraded: list[bool]
    fallbacks: Counter[str] = field(default_factory=Counter)  # rung or reason -> rows
    shadow_scores: npt.NDArray[np.float64] | None = None
    shadow_version: str | None = None
    agreement: Agreement | None = None


BISECT_CALLS = 64  # most predict calls spent isolating failing rows in one batch


def score_with_ladder(
    model: LoadedModel, X: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], list[str | None]]:
    """The model's outputs, with only the rows it fails on sent down the fallback ladder;
    returns the outputs (a row of class probabilities each for a multiclass model) and, per
    row, which rung answered (None: the model itself).

    A row the model answers NaN or inf for is one failing row. When the model raises, the batch
    is bisected to find the rows it raises on (at most ``BISECT_CALLS`` calls; what is still
    unresolved then goes down the ladder as a whole).

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from services.core.task import BINARY
    >>> class Picky:
    ...     version, metadata = "1", SimpleNamespace(task=BINARY)
    ...     def predict(self, X):
    ...         if (X[:, 0] < 0).any(): raise RuntimeError("boom")
    ...         return np.where(X[:, 1] > 0, np.nan, 0.5)
    ...     def predict_fallback(self, X): return np.full(len(X), 0.1), "base_rate"
    >>> scores, rungs = score_with_ladder(Picky(), np.array([[1, 0], [-1, 0], [1, 1], [1, 0]]))
    >>> scores.tolist(), rungs
    ([0.5, 0.1, 0.1, 0.5], [None, 'base_rate', 'base_rate', None])
    """
    n = len(X)
    task = model.metadata.task
    scores = np.empty((n, task.width) if task.width > 1 else n, dtype=np.float64)
    rungs: list[str | None] = [None] * n
    failing: list[npt.NDArray[np.intp]] = []
    budget = [BISECT_CALLS]

    def attempt(rows: npt.NDArray[np.intp]) -> None:
        budget[0] -= 1
        try:
            got = model.predict(X[rows])
            if got.shape != (len(rows), *scores.shape[1:]):
                raise ValueError("model returned outputs of the wrong shape")
        except Exception:  # noqa: BLE001 (a failing row degrades, it is never lost)
            if len(rows) == 1 or budget[0] <= 0:
                failing.append(rows)
            else:
                half = len(rows) // 2
                attempt(rows[:half])
                attempt(rows[half:])
            return
        finite = np.isfinite(got) if got.ndim == 1 else np.isfinite(got).all(axis=1)
        scores[rows[finite]] = got[finite]
        if not finite.all():
            failing.append(rows[~finite])

    if n:
        attempt(np.arange(n))
    for rows in failing:
        fallback, rung = model.predict_fallback(X[rows])
        scores[rows] = fallback
        for i in rows:
            rungs[i] = rung
    return scores, rungs


def _usable(model: LoadedModel, got: npt.NDArray[np.float64], n: int) -> bool:
    """A whole answer of a shadow or canary: the task's shape, every output finite."""
    width = model.metadata.task.width
    return got.shape == ((n, width) if width > 1 else (n,)) and bool(np.isfinite(got).all())


def score_rows(
    serving: Serving, X: npt.NDArray[np.float64], keys: Sequence[str], threshold: float
) -> Scored:
    """Score a batch's matrix under the current rollout (``threshold``: a binary task's; other
    tasks count no decision flips)."""
    n = len(X)
    fallbacks: Counter[str] = Counter()
    champ, rungs = score_with_ladder(serving.champion, X)
    degraded = [r is not None for r in rungs]
    fallbacks.update(r for r in rungs if r is not None)
    versions = [serving.champion.version] * n
    variants = ["champion"] * n
    challenger = serving.challenger
    if challenger is None or serving.mode == "none":
        return Scored(champ, versions, variants, degraded, fallbacks)
    if serving.mode == "shadow":
        try:
            shadow = challenger.predict(X)
            if not _usable(serving.champion, shadow, n):
                raise ValueError("unusable shadow scores")
        except Exception:  # noqa: BLE001 (a failing shadow must never affect what is served)
            fallbacks["shadow_error"] += n
            return Scored(champ, versions, variants, degraded, fallbacks)
        binary = serving.champion.metadata.task == BINARY
        return Scored(
            champ,
            versions,
            variants,
            degraded,
            fallbacks,
            shadow,
            challenger.version,
            agreement(champ, shadow, threshold if binary else None),
        )
    mask = np.asarray(in_canary(keys, serving.canary_percent), dtype=bool)
    if mask.any():
        try:
            canary = challenger.predict(X[mask])
            if not _usable(serving.champion, canary, int(mask.sum())):
                raise ValueError("unusable canary scores")
        except Exception:  # noqa: BLE001 (the champion answers for a failing challenger)
            fallbacks["challenger_error"] += int(mask.sum())
            return Scored(champ, versions, variants, degraded, fallbacks)
        scores = champ.copy()
        scores[mask] = canary
        for i in np.nonzero(mask)[0]:
            versions[i] = challenger.version
            variants[i] = "challenger"
            rung = rungs[i]
            if rung is not None:  # the challenger answered for it, not the ladder
                fallbacks[rung] -= 1
                degraded[i] = False
        fallbacks = +fallbacks
        return Scored(scores, versions, variants, degraded, fallbacks)
    return Scored(champ, versions, variants, degraded, fallbacks)


def compile_serving(serving: Serving, cache_dir: Path) -> Serving | None:
    """The same serving set with its LightGBM models compiled (lleaves, in a child process,
    cached by the model text's sha256); None when there was nothing to compile. Scores do not
    change (|diff| < 1e-6, tested), only their cost: a worker swaps this in between batches."""

    def one(m: LoadedModel | None) -> LoadedModel | None:
        if m is None or m.compiled is not None or m.metadata.flavor != "lightgbm":
            return m
        if m.metadata.task != BINARY:  # lleaves serves binary models only (load_artifacts)
            return m
        text = m.model.model_to_string()
        with tempfile.TemporaryDirectory(prefix="streamscore-compile-") as tmp:
            path = Path(tmp) / "model.txt"
            path.write_text(text, encoding="utf-8")
            sha = hashlib.sha256(text.encode()).hexdigest()
            compiled = compile_lightgbm(path, sha, cache_dir)
        return m if compiled is None else dataclasses.replace(m, compiled=compiled)

    champion, challenger = one(serving.champion), one(serving.challenger)
    if champion is serving.champion and challenger is serving.challenger:
        return None
    assert champion is not None  # noqa: S101 (one() keeps a model a model)
    return dataclasses.replace(serving, champion=champion, challenger=challenger)
