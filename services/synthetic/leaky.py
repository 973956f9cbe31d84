"""A world whose entity features move with the outcome after the event: label leakage on tap.

Riders book trips; a trip is cancelled with a probability from the rider's hidden propensity
and the trip's own context. After each trip, the rider's features in the online store are
updated with its outcome (their cancel rate, and whether the last trip was cancelled), as a
streaming feature pipeline would. A trip scored at its time sees the rider's history *before*
it; the store read later, at training time, already holds the outcome being predicted.

``play`` runs the world in time order through the same pieces the worker uses: one lookup per
batch from the store, the rows logged as the worker logs them (``feature_log_records``), then
the outcomes written back. Pure apart from the in-memory store it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.features.assemble import lookup_requests
from services.features.log import feature_log_records
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore

START_TIME_MS = 1_763_798_400_000
SPEC = FeatureSpec.from_dict(
    {
        "version": "leaky1",
        "groups": [
            {
                "name": "rider",
                "key_field": "rider_id",
                "features": [
                    {"name": "rider_cancel_rate", "default": 0.5, "min": 0, "max": 1},
                    {"name": "rider_last_cancelled", "default": 0.5, "min": 0, "max": 1},
                ],
            }
        ],
        "context": [{"name": "wait_minutes", "kind": "number", "default": 0}],
    }
)


@dataclass(slots=True)
class LeakyWorld:
    """Riders with a hidden propensity, and their running history in ``store``.

    Riders come and go at a steady pace: trip ``i`` is booked by one of the ``window`` riders
    from ``i // pace`` on, so each rider takes about ``pace`` trips and the world looks the
    same at any time (a holdout and the live stream are alike).
    """

    window: int = 400
    pace: int = 4
    riders: int = 60_000  # propensities drawn (enough for 240,000 trips)
    seed: int = 7
    store: InMemoryFeatureStore = field(default_factory=lambda: InMemoryFeatureStore(SPEC))
    logged: list[dict[str, Any]] = field(default_factory=list)
    _trips: np.ndarray[Any, Any] = field(init=False)
    _cancels: np.ndarray[Any, Any] = field(init=False)
    _propensity: np.ndarray[Any, Any] = field(init=False)
    _rng: np.random.Generator = field(init=False)
    _index: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._propensity = self._rng.normal(-1.0, 1.0, self.riders + self.window)
        self._trips = np.zeros(self.riders + self.window)
        self._cancels = np.zeros(self.riders + self.window)

    def play(self, n: int, batch: int = 500) -> tuple[list[dict[str, Any]], dict[str, bool]]:
        """``n`` more trips in time order, scored in batches: returns the events and their
        outcomes; the rows served are appended to ``logged`` (FeatureLog records)."""
        events: list[dict[str, Any]] = []
        outcomes: dict[str, bool] = {}
        for start in range(0, n, batch):
            part = self._trips_of(min(batch, n - start))
            served = self.store.get_many(lookup_requests(SPEC, part))
            ids = [str(e["event_id"]) for e in part]
            self.logged += feature_log_records(
                SPEC, "cancellation", ids, ["1"] * len(ids), served, part[-1]["event_time"]
            )
            for e in part:  # the outcome is known after the trip, and the features move
                r = int(e["rider_id"][2:])
                z = self._propensity[r] + 0.08 * (e["wait_minutes"] - 10.0)
                cancelled = bool(self._rng.random() < 1.0 / (1.0 + np.exp(-z)))
                outcomes[str(e["event_id"])] = cancelled
                self._trips[r] += 1
                self._cancels[r] += cancelled
                rate = (self._cancels[r] + 1.0) / (self._trips[r] + 2.0)
                row = np.asarray([[rate, float(cancelled)]], dtype=np.float32)
                self.store.put_many("rider", [e["rider_id"]], row)
            events += part
        return events, outcomes

    def _trips_of(self, n: int) -> list[dict[str, Any]]:
        first = (self._index + np.arange(n)) // self.pace
        riders = first + self._rng.integers(0, self.window, n)
        waits = self._rng.gamma(2.0, 5.0, n)
        out = []
        for r, w in zip(riders.tolist(), waits.tolist(), strict=True):
            self._index += 1
            out.append(
                {
                    "event_id": f"trip-{self._index:07d}",
                    "event_time": START_TIME_MS + self._index * 1000,
                    "rider_id": f"r-{r:06d}",
                    "wait_minutes": round(w, 2),
                }
            )
        return out
