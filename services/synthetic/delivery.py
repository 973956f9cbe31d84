"""The delivery domains' synthetic world: couriers, restaurants, orders and how long each took.

Its truth is known, so tests can use it as an oracle: an order's delivery time is a known
function of what the model sees (``expected_minutes``: the restaurant's preparation time, the
distance at the courier's speed, the basket, rush hours and rain) plus normal noise with
standard deviation ``NOISE_SD`` minutes. A model that learnt the function has a mean absolute
error near ``NOISE_SD * sqrt(2 / pi)`` (about 1.6 minutes), and no model can do better on
average. The ``delivery`` domain predicts the minutes (regression); ``delivery_band``
predicts the band they fall in (three classes). Same seed, same world; same index, same order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec
from services.synthetic.hostile import any_domain_hostile_values

START_TIME_MS = 1_763_798_400_000  # 2025-11-22T08:00:00Z
MINUTE_MS = 60_000
NOISE_SD = 2.0  # minutes: the irreducible error of the truth
VEHICLES = ("BIKE", "SCOOTER", "CAR")
SPEED_KMH = {"BIKE": 14.0, "SCOOTER": 22.0, "CAR": 26.0}  # typical, per vehicle
# The bands of the 3-class domain, by delivery minutes: under 25, 25 to 35, over 35.
BANDS = ("UNDER_25", "FROM_25_TO_35", "OVER_35")
BAND_EDGES = (25.0, 35.0)


def oracle_mae() -> float:
    """The expected absolute error of the truth itself: what a perfect model scores.

    >>> round(oracle_mae(), 3)
    1.596
    """
    return NOISE_SD * math.sqrt(2 / math.pi)


def band_of(minutes: npt.ArrayLike) -> list[str]:
    """
    >>> band_of([12.0, 25.0, 40.5])
    ['UNDER_25', 'FROM_25_TO_35', 'OVER_35']
    """
    return [BANDS[i] for i in np.digitize(np.asarray(minutes, dtype=float), BAND_EDGES)]


class DeliveryWorld:
    """Couriers and restaurants with their features; orders and their outcomes by index."""

    def __init__(
        self,
        spec: FeatureSpec,
        n_couriers: int = 2000,
        n_restaurants: int = 300,
        seed: int = 42,
        rate_per_second: float = 1000.0,
        start_time_ms: int = START_TIME_MS,
    ) -> None:
        self.spec, self.seed = spec, seed
        self.rate, self.start_time_ms = rate_per_second, start_time_ms
        self.n_couriers, self.n_restaurants = n_couriers, n_restaurants
        rng = np.random.default_rng([seed, 201])
        self.vehicle = rng.choice(len(VEHICLES), size=n_couriers, p=[0.5, 0.3, 0.2])
        typical = np.array([SPEED_KMH[VEHICLES[v]] for v in self.vehicle])
        self.speed = np.round(typical * rng.lognormal(0, 0.15, n_couriers), 2)
        self.deliveries = rng.poisson(120, n_couriers).astype(np.float64)
        self.prep = np.round(6 + rng.gamma(3.0, 2.5, n_restaurants), 2)
        self.orders = rng.poisson(400, n_restaurants).astype(np.float64)
        self.courier_weights = _zipf(n_couriers, 0.9, rng)
        self.restaurant_weights = _zipf(n_restaurants, 1.0, rng)

    # -- entities ---------------------------------------------------------------------------
    def features(self, group: str) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Entity keys and their feature rows (in the spec's order), as loaded into the store."""
        if group == "courier":
            rows = np.column_stack([self.speed, self.deliveries]).astype(np.float32)
            return [f"courier-{i:05d}" for i in range(self.n_couriers)], rows
        if group == "restaurant":
            rows = np.column_stack([self.prep, self.orders]).astype(np.float32)
            return [f"r-{i:04d}" for i in range(self.n_restaurants)], rows
        raise KeyError(group)

    def weights(self, group: str) -> npt.NDArray[np.float64]:
        return self.courier_weights if group == "courier" else self.restaurant_weights

    # -- events -----------------------------------------------------------------------------
    def events(self, n: int, start_index: int = 0) -> list[dict[str, Any]]:
        """``n`` orders with indexes ``start_index ...``; same inputs, same orders."""
        rng = np.random.default_rng([self.seed, 203, start_index])
        couriers = rng.choice(self.n_couriers, size=n, p=self.courier_weights)
        restaurants = rng.choice(self.n_restaurants, size=n, p=self.restaurant_weights)
        distance = np.round(np.clip(rng.lognormal(math.log(2.5), 0.5, n), 0.2, 15.0), 2)
        count = 1 + rng.poisson(1.5, n)
        basket = np.round(count * 11.0 * rng.lognormal(0, 0.3, n), 2)
        rain = rng.random(n) < 0.15
        idx = np.arange(start_index, start_index + n)
        times = self.start_time_ms + (idx * 1000 / self.rate).astype(np.int64)
        return [
            {
                "event_id": f"order-{self.seed}-{start_index + i:012d}",
                "event_time": int(times[i]),
                "courier_id": f"courier-{couriers[i]:05d}",
                "restaurant_id": f"r-{restaurants[i]:04d}",
                "distance_km": float(distance[i]),
                "item_count": int(count[i]),
                "basket_value": float(basket[i]),
                "vehicle": VEHICLES[self.vehicle[couriers[i]]],
                "is_raining": bool(rain[i]),
                "_index": int(start_index + i),
                "_courier": int(couriers[i]),
                "_restaurant": int(restaurants[i]),
            }
            for i in range(n)
        ]

    def expected_minutes(self, events: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The truth without its noise (the oracle): what a perfect model predicts."""
        courier = np.array([e["_courier"] for e in events], dtype=np.int64)
        restaurant = np.array([e["_restaurant"] for e in events], dtype=np.int64)
        distance = np.array([e["distance_km"] for e in events])
        count = np.array([e["item_count"] for e in events], dtype=np.float64)
        hour = (np.array([e["event_time"] for e in events]) // 3_600_000) % 24
        rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
        exposed = np.array([e["is_raining"] and e["vehicle"] != "CAR" for e in events])
        return np.asarray(
            3.0
            + self.prep[restaurant]
            + 60.0 * distance / self.speed[courier]
            + 0.8 * count
            + 5.0 * rush
            + 4.0 * exposed,
            dtype=np.float64,
        )

    def expected(self, events: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The regression oracle (``expected_minutes``), under the name the demo asks for."""
        return self.expected_minutes(events)

    def class_probabilities(self, events: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The 3-class oracle: the probability of each band (``BANDS`` order) given the
        noise-free minutes (the 1-minute floor of the outcome is left out: it never binds)."""
        expected = self.expected_minutes(events)

        def below(edge: float) -> npt.NDArray[np.float64]:
            z = (edge - expected) / (NOISE_SD * math.sqrt(2))
            return np.asarray([0.5 * (1 + math.erf(v)) for v in z], dtype=np.float64)

        low, high = below(BAND_EDGES[0]), below(BAND_EDGES[1])
        return np.column_stack([low, high - low, 1 - high])

    def labels(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The outcome of each order, known when it is delivered: the minutes it took (truth
        plus noise, deterministic per order) and their band: both domains' targets, so a
        producer sends the fields of its domain's label record."""
        expected = self.expected_minutes(events)
        noise = np.array(
            [np.random.default_rng([self.seed, 204, e["_index"]]).normal() for e in events]
        )
        minutes = np.round(np.maximum(expected + NOISE_SD * noise, 1.0), 3)
        bands = band_of(minutes)
        return [
            {
                "event_id": e["event_id"],
                "courier_id": e["courier_id"],
                "delivery_minutes": float(m),
                "eta_band": b,
                "event_time": e["event_time"],
                "label_time": e["event_time"] + int(m * MINUTE_MS),
            }
            for e, m, b in zip(events, minutes, bands, strict=True)
        ]


def hostile_values(codec: Any, template: dict[str, Any]) -> list[tuple[bytes, str, str]]:
    """Malformed orders, with the stage and reason a worker refuses each with."""
    cases = [
        (template | {"distance_km": -1.0}, "validate", "out_of_range"),
        (template | {"distance_km": math.inf}, "validate", "not_finite"),
        (template | {"item_count": 0}, "validate", "out_of_range"),
        (template | {"courier_id": "c" * 500}, "validate", "too_long"),
    ]
    return any_domain_hostile_values(codec, template) + [
        (codec.encode_one(e), stage, reason) for e, stage, reason in cases
    ]


def make(spec: FeatureSpec, seed: int = 42, entities: int | None = None, **kw: Any) -> Any:
    """The domain generator's entry point: ``entities`` couriers (default 2,000) and a sixth
    as many restaurants."""
    couriers = entities or 2000
    return DeliveryWorld(
        spec, n_couriers=couriers, n_restaurants=max(1, couriers // 6), seed=seed, **kw
    )


def _zipf(n: int, a: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    w = 1.0 / np.arange(1, n + 1) ** a
    w = w[rng.permutation(n)]
    return np.asarray(w / w.sum(), dtype=np.float64)
