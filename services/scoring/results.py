"""What scoring a batch gives: served and shadow predictions as columns (``PredictionBlock``),
dead letters, deferred messages and the batch's fallbacks and agreement (``BatchResult``).

Every input ends in exactly one of predictions, dead letters or deferred:
``result.n_predictions + len(result.dead_letters) + len(result.deferred) == len(messages)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.codec.columns import Const, column
from services.core.records import DeadLetterOut, Inbound
from services.features.store import Lookup
from services.scoring.rollout import Agreement


def prediction_id(event_id: str, model_version: str) -> str:
    """Deterministic id: a replay or a redelivery of the same event by the same version gets it.

    >>> prediction_id("e1", "3") == prediction_id("e1", "3") != prediction_id("e1", "4")
    True
    """
    return prediction_id_raw(f"{event_id}\x1f{model_version}")


def prediction_id_raw(joined: str) -> str:
    """``prediction_id`` of ``"<event_id>\\x1f<model_version>"``, already joined."""
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class PredictionOut:
    """A scored event, ready to encode; keyed like its input."""

    source: Inbound
    record: dict[str, Any]
    event: dict[str, Any] | None = None  # the decoded input (drift monitors read its fields)


@dataclass(frozen=True, slots=True)
class PredictionBlock:
    """One batch's predictions as columns: the hot path encodes, counts and stores them without
    a dict per event; ``outs()`` gives per-event ``PredictionOut`` records for everything else.
    """

    sources: list[Inbound]
    events: list[dict[str, Any]]
    model_name: str
    versions: list[str]
    variants: list[str]
    scores: npt.NDArray[np.float64]
    degraded: list[bool]
    missing: tuple[tuple[str, ...], ...]
    scored_at: int
    carry: tuple[str, ...] = ()  # event fields copied into each prediction (the spec's carry)
    decide_at: float | None = None  # a declared decision threshold: `decision` is set
    # Multiclass: the class probabilities per row (``scores`` holds the top one) and the classes
    # in their columns' order; the record then carries `predicted_class` and `probabilities`.
    probabilities: npt.NDArray[np.float64] | None = None
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.sources)

    def field(self, name: str) -> list[Any]:
        """One input field for every prediction."""
        return column(self.events, name)

    def columns(self) -> dict[str, Any]:
        """The Prediction record's fields, a column each (``Const`` when uniform)."""
        event_ids = self.field("event_id")
        versions: Any = _uniform(self.versions)
        if isinstance(versions, Const):
            tail = f"\x1f{versions.value}"
            ids = [prediction_id_raw(e + tail) for e in event_ids]
        else:
            ids = [prediction_id(e, v) for e, v in zip(event_ids, self.versions, strict=True)]
        carried = {name: self.field(name) for name in self.carry}
        per_class: dict[str, Any] = {}
        if self.probabilities is not None:
            names = np.asarray(self.classes, dtype=object)
            per_class = {
                "predicted_class": list(names[self.probabilities.argmax(axis=1)]),
                "probabilities": [
                    dict(zip(self.classes, row, strict=True)) for row in self.probabilities.tolist()
                ],
            }
        return {
            "prediction_id": ids,
            "event_id": event_ids,
            **carried,
            "score": self.scores,
            "model_name": Const(self.model_name),
            "model_version": versions,
            "variant": _uniform(self.variants),
            "degraded": _uniform(self.degraded),
            "missing_features": _uniform([list(m) for m in self.missing]),
            "event_time": self.field("event_time"),
            "scored_at": Const(self.scored_at),
            "decision": (
                Const(None) if self.decide_at is None else (self.scores >= self.decide_at).tolist()
            ),
            **per_class,
        }

    def records(self) -> list[dict[str, Any]]:
        cols = self.columns()
        n = len(self)
        expanded = {k: [v.value] * n if isinstance(v, Const) else list(v) for k, v in cols.items()}
        expanded["score"] = [float(x) for x in self.scores]
        rows = zip(*expanded.values(), strict=True)
        return [dict(zip(expanded, row, strict=True)) for row in rows]

    def outs(self, with_events: bool = True) -> list[PredictionOut]:
        return [
            PredictionOut(src, rec, ev if with_events else None)
            for src, rec, ev in zip(self.sources, self.records(), self.events, strict=True)
        ]


def _uniform(values: list[Any]) -> Any:
    """``Const`` when every value is the same (the common case: one version, one variant)."""
    if values and all(v == values[0] for v in values):
        return Const(values[0])
    return values


@dataclass(frozen=True, slots=True)
class BatchResult:
    served: PredictionBlock | None = None
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    degraded: bool = False  # a fallback scorer answered for some of this batch
    missing: dict[str, int] = field(default_factory=dict)  # feature lookups that fell back
    # Backpressure: messages to consume again later (per partition, a suffix of the batch).
    deferred: list[Inbound] = field(default_factory=list)
    shadowed: PredictionBlock | None = None  # variant=shadow, not served
    agreement: Agreement | None = None  # champion vs shadow on this batch
    fallbacks: dict[str, int] = field(default_factory=dict)  # fallback rung/reason -> rows
    rows: dict[str, Lookup] | None = None  # per group, the entity rows ``served`` was scored with

    @property
    def predictions(self) -> list[PredictionOut]:
        """Served predictions, one record each (tests and slow paths; the worker uses
        ``served``)."""
        return self.served.outs() if self.served is not None else []

    @property
    def shadow(self) -> list[PredictionOut]:
        return self.shadowed.outs(with_events=False) if self.shadowed is not None else []

    @property
    def n_predictions(self) -> int:
        return len(self.served) if self.served is not None else 0
