"""A synthetic but realistic social feed: users, items, impressions and delayed engagement labels.

Users and items have latent vectors; what the model can observe are noisy linear projections of
them (the user/item features loaded into Redis) plus the context on each event. The true
engagement probability is a logistic function of the user-item affinity and context effects
(slot position, following the author, video on mobile, item age, time of day). Everything is
deterministic given the seed and the event index, so history, streams and labels can be
regenerated exactly.

Drift knobs (for the drift issue): covariate shift (who shows up and where items are placed
moves) and concept drift (the affinity effect reverses), abrupt or ramped over ``width`` events.

>>> from services.features.spec import FeatureSpec
>>> w = World(FeatureSpec.load(), n_users=50, n_items=20, seed=1)
>>> batch = w.events(3, start_index=0)
>>> [e["event_id"] for e in batch] == [e["event_id"] for e in w.events(3, start_index=0)]
True
>>> 0.0 < float(w.probabilities(batch).mean()) < 1.0
True
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.features.assemble import MS_PER_HOUR
from services.features.spec import FeatureSpec
from services.synthetic.hostile import hostile_values as feed_hostile

# The feed's generator turns its world at a chosen event (the demo's act 2, the heal harness).
SUPPORTS_DRIFT = True
# The feed's enums, as its schema declares them (the generator is domain code).
SURFACES = ("UNKNOWN", "HOME_FEED", "EXPLORE", "PROFILE", "SEARCH", "NOTIFICATIONS")
DEVICES = ("UNKNOWN", "IOS", "ANDROID", "WEB")

COUNTRIES = ("DE", "US", "BR", "IN", "JP", "FR", "GB", "NG")
START_TIME_MS = 1_763_798_400_000  # 2025-11-22T08:00:00Z, the default start of generated time


@dataclass(frozen=True, slots=True)
class Drift:
    """Where and how the world changes. ``width`` 0 is abrupt; otherwise a linear ramp."""

    kind: Literal["none", "covariate", "concept"] = "none"
    start: int = 0
    width: int = 0
    strength: float = 1.0

    def amount(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """0 before the onset, rising to ``strength`` (at once, or over ``width`` events)."""
        if self.kind == "none":
            return np.zeros(len(index))
        if self.width <= 0:
            return np.where(index >= self.start, self.strength, 0.0)
        return np.clip((index - self.start) / self.width, 0.0, 1.0) * self.strength


class World:
    """Users, items and their features; generates events and labels by index."""

    def __init__(
        self,
        spec: FeatureSpec,
        n_users: int = 5000,
        n_items: int = 2000,
        seed: int = 42,
        latent_dim: int = 8,
        drift: Drift | None = None,
        rate_per_second: float = 1000.0,
        start_time_ms: int = START_TIME_MS,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.drift = drift or Drift()
        self.rate = rate_per_second
        self.start_time_ms = start_time_ms
        rng = np.random.default_rng(seed)
        self.n_users, self.n_items, self.k = n_users, n_items, latent_dim
        self.user_latent = rng.normal(size=(n_users, latent_dim))
        self.item_latent = rng.normal(size=(n_items, latent_dim))
        user_w, item_w = spec.group("user").width, spec.group("item").width
        proj_u = rng.normal(size=(latent_dim, user_w)) / math.sqrt(latent_dim)
        proj_i = rng.normal(size=(latent_dim, item_w)) / math.sqrt(latent_dim)
        self.user_features = (
            self.user_latent @ proj_u + 0.3 * rng.normal(size=(n_users, user_w))
        ).astype(np.float32)
        self.item_features = (
            self.item_latent @ proj_i + 0.3 * rng.normal(size=(n_items, item_w))
        ).astype(np.float32)
        # Popularity is heavy-tailed: a few users and items account for much of the traffic.
        self.user_weights = _zipf_weights(n_users, 1.1, rng)
        self.item_weights = _zipf_weights(n_items, 1.2, rng)
        self.user_tenure = rng.integers(0, 3000, size=n_users)
        self.item_age_base = rng.exponential(12.0, size=n_items)
        self.item_is_video = rng.random(n_items) < 0.35

    # -- entities -------------------------------------------------------------------------
    def user_ids(self) -> list[str]:
        return [f"u-{i:06d}" for i in range(self.n_users)]

    def item_ids(self) -> list[str]:
        return [f"i-{i:06d}" for i in range(self.n_items)]

    def weights(self, group: str) -> npt.NDArray[np.float64]:
        """Each entity's share of the traffic, in ``features(group)`` order."""
        return self.user_weights if group == "user" else self.item_weights

    def features(self, group: str) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Entity keys and their feature rows, as loaded into the feature store."""
        if group == "user":
            return self.user_ids(), self.user_features
        if group == "item":
            return self.item_ids(), self.item_features
        raise KeyError(group)

    # -- events ---------------------------------------------------------------------------
    def _rng(self, start_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 7, start_index])

    def events(self, n: int, start_index: int = 0) -> list[dict[str, Any]]:
        """``n`` interaction events with indexes ``start_index ...``; same inputs, same events."""
        rng = self._rng(start_index)
        idx = np.arange(start_index, start_index + n, dtype=np.int64)
        shift = self.drift.amount(idx) if self.drift.kind == "covariate" else np.zeros(n)
        users = _sample(rng, self.user_weights, n, shift)
        items = rng.choice(self.n_items, size=n, p=self.item_weights)
        position = np.minimum(rng.geometric(0.15 / (1 + 2 * shift)) - 1, 49)
        surface = rng.choice(len(SURFACES) - 1, size=n, p=[0.55, 0.2, 0.1, 0.1, 0.05]) + 1
        device = rng.choice(len(DEVICES) - 1, size=n, p=[0.45, 0.4, 0.15]) + 1
        affinity = self._affinity(users, items)
        following = rng.random(n) < 1 / (1 + np.exp(-(affinity - 1.0)))
        rtt_known = rng.random(n) < 0.8
        rtt = rng.lognormal(3.5, 0.5, size=n)
        age = self.item_age_base[items] * (1 + shift) + rng.exponential(2.0, size=n)
        depth = rng.poisson(8 + 10 * shift)
        times = self.start_time_ms + (idx * 1000 / self.rate).astype(np.int64)
        ids = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
        return [
            {
                "event_id": str(uuid.UUID(int=(int(ids[i, 0]) << 64) | int(ids[i, 1]))),
                "event_time": int(times[i]),
                "user_id": f"u-{users[i]:06d}",
                "item_id": f"i-{items[i]:06d}",
                "surface": SURFACES[surface[i]],
                "device": DEVICES[device[i]],
                "country": COUNTRIES[users[i] % len(COUNTRIES)],
                "position": int(position[i]),
                "session_depth": int(depth[i]),
                "item_age_hours": float(round(age[i], 3)),
                "user_tenure_days": int(self.user_tenure[users[i]]),
                "network_rtt_ms": float(round(rtt[i], 2)) if rtt_known[i] else None,
                "is_following_author": bool(following[i]),
                "is_video": bool(self.item_is_video[items[i]]),
                "is_sponsored": bool(rng.random() < 0.05),
                "_index": int(idx[i]),
            }
            for i in range(n)
        ]

    def _affinity(
        self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        dots = np.einsum("ij,ij->i", self.user_latent[users], self.item_latent[items])
        return np.asarray(dots / math.sqrt(self.k), dtype=np.float64)

    def probabilities(self, events: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The true engagement probability of each event (what a perfect model would say)."""
        users = np.array([int(e["user_id"][2:]) for e in events])
        items = np.array([int(e["item_id"][2:]) for e in events])
        idx = np.array([e["_index"] for e in events], dtype=np.int64)
        concept = self.drift.amount(idx) if self.drift.kind == "concept" else np.zeros(len(events))
        affinity = self._affinity(users, items) * (1 - 2 * np.clip(concept, 0, 1))
        position = np.array([e["position"] for e in events], dtype=np.float64)
        following = np.array([e["is_following_author"] for e in events], dtype=np.float64)
        mobile_video = np.array(
            [e["is_video"] and e["device"] != "WEB" for e in events], dtype=np.float64
        )
        age = np.array([e["item_age_hours"] for e in events], dtype=np.float64)
        hour = np.array([(e["event_time"] // MS_PER_HOUR) % 24 for e in events], dtype=np.float64)
        logit = (
            -1.6
            + 1.4 * affinity
            - 0.05 * position
            + 0.7 * following
            + 0.4 * mobile_video
            - 0.02 * age
            + 0.25 * np.sin(2 * math.pi * hour / 24)
        )
        return np.asarray(1 / (1 + np.exp(-logit)), dtype=np.float64)

    def labels(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Delayed ground truth drawn from the true probability (deterministic per event)."""
        p = self.probabilities(events)
        out = []
        for e, prob in zip(events, p, strict=True):
            rng = np.random.default_rng([self.seed, 11, e["_index"]])
            delay_ms = int(rng.uniform(30_000, 600_000))
            out.append(
                {
                    "event_id": e["event_id"],
                    "user_id": e["user_id"],
                    "item_id": e["item_id"],
                    "engaged": bool(rng.random() < prob),
                    "event_time": e["event_time"],
                    "label_time": e["event_time"] + delay_ms,
                }
            )
        return out


def hostile_values(codec: Any, template: dict[str, Any]) -> list[tuple[bytes, str, str]]:
    """The feed's malformed events (the demo mixes them in)."""
    return feed_hostile(codec, template)


def make(spec: FeatureSpec, seed: int = 42, entities: int | None = None, **kw: Any) -> World:
    """The domain generator's entry point (domain.json ``generator``): ``entities`` users and
    three eighths as many items (by default 5,000 users and 2,000 items)."""
    if entities is None:
        return World(spec, n_users=5000, n_items=2000, seed=seed, **kw)
    return World(spec, n_users=entities, n_items=max(1, entities * 3 // 8), seed=seed, **kw)


def strip_private(event: dict[str, Any]) -> dict[str, Any]:
    """The event as a producer sends it (without the generator's ``_index``)."""
    return {k: v for k, v in event.items() if not k.startswith("_")}


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    ranks = rng.permutation(n) + 1
    w = 1.0 / ranks.astype(np.float64) ** a
    return np.asarray(w / w.sum(), dtype=np.float64)


def _sample(
    rng: np.random.Generator,
    weights: npt.NDArray[np.float64],
    n: int,
    shift: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """Users by popularity; under covariate shift, a growing share comes from the unpopular tail."""
    popular = rng.choice(len(weights), size=n, p=weights)
    tail = rng.integers(0, len(weights), size=n)
    take_tail = rng.random(n) < np.clip(shift, 0, 1) * 0.8
    return np.asarray(np.where(take_tail, tail, popular), dtype=np.int64)
