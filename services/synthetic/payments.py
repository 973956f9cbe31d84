"""The payments domain's synthetic world: cards, merchants, transactions and chargebacks.

Fraud follows a known probability (``probabilities``): risky cards, merchants with a history of
fraud, large amounts, card-not-present channels, risky merchant categories and night hours raise
it. Outcomes arrive 2 to 60 days after the transaction. Same seed, same world; same index, same
transaction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec
from services.synthetic.hostile import any_domain_hostile_values

START_TIME_MS = 1_763_798_400_000  # 2025-11-22T08:00:00Z
DAY_MS = 86_400_000
# Merchant categories (ISO 18245) with their typical ticket and a fraud lift.
CATEGORIES = {
    "5411": (45.0, 0.0),  # grocery
    "5812": (38.0, 0.0),  # restaurants
    "5999": (60.0, 0.3),  # miscellaneous retail
    "5732": (280.0, 0.8),  # electronics
    "5944": (420.0, 1.0),  # jewellery
    "4829": (150.0, 1.3),  # money transfer
    "7995": (90.0, 1.1),  # gambling
    "5691": (70.0, 0.2),  # clothing: not in the spec's vocabulary ("other")
}
COUNTRIES = {"DE": "EUR", "FR": "EUR", "US": "USD", "GB": "GBP", "CH": "CHF", "JP": "JPY"}


class PaymentsWorld:
    """Cards and merchants with their features; transactions and outcomes by index."""

    def __init__(
        self,
        spec: FeatureSpec,
        n_cards: int = 5000,
        n_merchants: int = 600,
        seed: int = 42,
        rate_per_second: float = 1000.0,
        start_time_ms: int = START_TIME_MS,
    ) -> None:
        self.spec, self.seed = spec, seed
        self.rate, self.start_time_ms = rate_per_second, start_time_ms
        rng = np.random.default_rng([seed, 101])
        self.n_cards, self.n_merchants = n_cards, n_merchants
        # Latent risk: a few cards are compromised; a few merchants attract fraud.
        self.card_risk = rng.beta(0.4, 6.0, size=n_cards)
        self.card_mean = rng.lognormal(math.log(60), 0.6, size=n_cards)
        self.card_age = rng.exponential(900, size=n_cards)
        self.merchant_risk = rng.beta(0.5, 20.0, size=n_merchants)
        categories = list(CATEGORIES)
        self.merchant_category = rng.choice(len(categories), size=n_merchants)
        self.categories = categories
        countries = list(COUNTRIES)
        self.merchant_country = rng.choice(
            len(countries), size=n_merchants, p=[0.3, 0.15, 0.25, 0.15, 0.05, 0.1]
        )
        self.countries = countries
        self.merchant_online = rng.random(n_merchants) < 0.4
        self.merchant_age = rng.exponential(1500, size=n_merchants)
        self.card_weights = _zipf(n_cards, 1.05, rng)
        self.merchant_weights = _zipf(n_merchants, 1.1, rng)
        noise = np.random.default_rng([seed, 102])
        self.card_features = np.column_stack(
            [
                noise.poisson(2 + 20 * self.card_risk),
                self.card_mean * noise.lognormal(0, 0.1, n_cards),
                self.card_age,
                noise.poisson(8 * self.card_risk),
            ]
        ).astype(np.float32)
        tickets = np.array([CATEGORIES[categories[c]][0] for c in self.merchant_category])
        self.merchant_features = np.column_stack(
            [
                np.clip(self.merchant_risk + noise.normal(0, 0.005, n_merchants), 0, 1),
                tickets * noise.lognormal(0, 0.2, n_merchants),
                self.merchant_age,
            ]
        ).astype(np.float32)

    # -- entities ---------------------------------------------------------------------------
    def features(self, group: str) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Entity keys and their feature rows (in the spec's order), as loaded into the store."""
        if group == "card":
            return [f"card-{i:06d}" for i in range(self.n_cards)], self.card_features
        if group == "merchant":
            return [f"m-{i:05d}" for i in range(self.n_merchants)], self.merchant_features
        raise KeyError(group)

    def weights(self, group: str) -> npt.NDArray[np.float64]:
        return self.card_weights if group == "card" else self.merchant_weights

    # -- events -----------------------------------------------------------------------------
    def events(self, n: int, start_index: int = 0) -> list[dict[str, Any]]:
        """``n`` transactions with indexes ``start_index ...``; same inputs, same events."""
        rng = np.random.default_rng([self.seed, 103, start_index])
        cards = rng.choice(self.n_cards, size=n, p=self.card_weights)
        merchants = rng.choice(self.n_merchants, size=n, p=self.merchant_weights)
        online = self.merchant_online[merchants]
        atm = (~online) & (rng.random(n) < 0.05)
        channel = np.where(online, np.where(rng.random(n) < 0.1, "MOTO", "ECOM"), "POS")
        channel = np.where(atm, "ATM", channel)
        present = (channel == "POS") | (channel == "ATM")
        tickets = self.merchant_features[merchants, 1].astype(np.float64)
        # Fraudsters on risky cards spend more.
        amount = tickets * rng.lognormal(0, 0.7, size=n) * (1 + 3 * self.card_risk[cards])
        amount = np.clip(np.round(amount, 2), 0.01, 50_000)
        idx = np.arange(start_index, start_index + n)
        times = self.start_time_ms + (idx * 1000 / self.rate).astype(np.int64)
        out = []
        for i in range(n):
            country = self.countries[self.merchant_country[merchants[i]]]
            out.append(
                {
                    "event_id": f"auth-{self.seed}-{start_index + i:012d}",
                    "event_time": int(times[i]),
                    "card_id": f"card-{cards[i]:06d}",
                    "merchant_id": f"m-{merchants[i]:05d}",
                    "amount": float(amount[i]),
                    "currency": COUNTRIES[country],
                    "merchant_category": self.categories[self.merchant_category[merchants[i]]],
                    "channel": str(channel[i]),
                    "country": country,
                    "card_present": bool(present[i]),
                    "_index": int(start_index + i),
                    "_card": int(cards[i]),
                    "_merchant": int(merchants[i]),
                }
            )
        return out

    def probabilities(self, events: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The true fraud probability of each transaction (the oracle)."""
        card = np.array([e["_card"] for e in events])
        merchant = np.array([e["_merchant"] for e in events])
        amount = np.array([e["amount"] for e in events])
        lift = np.array([CATEGORIES[e["merchant_category"]][1] for e in events])
        absent = np.array([not e["card_present"] for e in events], dtype=np.float64)
        hour = (np.array([e["event_time"] for e in events]) // 3_600_000) % 24
        night = ((hour >= 1) & (hour <= 5)).astype(np.float64)
        ratio = np.log1p(amount / self.card_mean[card])
        logit = (
            -6.2
            + 9.0 * self.card_risk[card]
            + 30.0 * self.merchant_risk[merchant]
            + 0.9 * ratio
            + 1.1 * absent
            + lift
            + 0.8 * night
        )
        return np.asarray(1 / (1 + np.exp(-logit)), dtype=np.float64)

    def labels(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The outcome of each transaction, 2 to 60 days later (deterministic per event)."""
        p = self.probabilities(events)
        out = []
        for e, prob in zip(events, p, strict=True):
            rng = np.random.default_rng([self.seed, 104, e["_index"]])
            fraud = bool(rng.random() < prob)
            delay = int(rng.uniform(2, 60) * DAY_MS)
            out.append(
                {
                    "event_id": e["event_id"],
                    "card_id": e["card_id"],
                    "is_fraud": fraud,
                    "event_time": e["event_time"],
                    "label_time": e["event_time"] + delay,
                }
            )
        return out


def hostile_values(codec: Any, template: dict[str, Any]) -> list[tuple[bytes, str, str]]:
    """Malformed transactions, with the stage and reason a worker refuses each with."""
    cases = [
        (template | {"amount": -5.0}, "validate", "out_of_range"),
        (template | {"amount": math.inf}, "validate", "not_finite"),
        (template | {"merchant_category": "54x1"}, "validate", "bad_format"),
        (template | {"country": "Germany"}, "validate", "bad_format"),
        (template | {"card_id": "c" * 500}, "validate", "too_long"),
    ]
    return any_domain_hostile_values(codec, template) + [
        (codec.encode_one(e), stage, reason) for e, stage, reason in cases
    ]


def make(spec: FeatureSpec, seed: int = 42, entities: int | None = None, **kw: Any) -> Any:
    """The domain generator's entry point: ``entities`` cards (default 5,000) and an eighth as
    many merchants."""
    cards = entities or 5000
    return PaymentsWorld(spec, n_cards=cards, n_merchants=max(1, cards // 8), seed=seed, **kw)


def _zipf(n: int, a: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    w = 1.0 / np.arange(1, n + 1) ** a
    w = w[rng.permutation(n)]
    return np.asarray(w / w.sum(), dtype=np.float64)
