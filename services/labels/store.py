"""Predictions kept for the label horizon, so delayed labels can be joined to what was served.

One Redis key per event and kind (served or shadow), ``<prefix>pred:<kind>:<event_id>`` =
``version|variant|score|degraded|missing groups[|class probabilities]`` (rows written before
the degraded and missing fields existed read as not degraded, nothing missing; the class
probabilities, comma-separated, only for a multiclass model), with a TTL of the label horizon;
the scoring worker writes a batch with one server-side script call (one command, one round
trip: a pipeline of one SET per event cost ~20 µs per event in the client, the script ~1) and
the label join reads a batch with one MGET. On a Redis Cluster the script is called once per
slot and the MGET made once per slot, each set in one pipeline: one round trip per shard. Event
ids spread over every slot, so there a batch costs about one script call per event: the price
of keeping predictions spread over the shards rather than hash-tagged onto one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.errors import FeatureStoreUnavailable
from services.redisconn.client import REDIS_ERRORS, Client, reason
from services.redisconn.refusal import refusal
from services.redisconn.slots import SlotScript, mget


@dataclass(frozen=True, slots=True)
class Stored:
    model_version: str
    variant: str
    score: float
    degraded: bool = False
    missing: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()  # multiclass: per class, in the classes' order


def encode(stored: Stored) -> bytes:
    """
    >>> decode(encode(Stored("3", "champion", 0.25))) == Stored("3", "champion", 0.25)
    True
    >>> decode(encode(Stored("3", "champion", 0.5, True, ("user", "item")))).missing
    ('user', 'item')
    >>> decode(b"2|shadow|0.125").score
    0.125
    >>> decode(encode(Stored("3", "champion", 0.5, probabilities=(0.5, 0.25, 0.25)))).probabilities
    (0.5, 0.25, 0.25)
    """
    s = stored
    missing = ",".join(s.missing)
    text = f"{s.model_version}|{s.variant}|{s.score!r}|{int(s.degraded)}|{missing}"
    if s.probabilities:
        text += "|" + ",".join(map(repr, s.probabilities))
    return text.encode()


def decode(raw: bytes | str | None) -> Stored | None:
    if raw is None:
        return None
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split("|")
        if len(parts) == 3:
            return Stored(parts[0], parts[1], float(parts[2]))
        version, variant, score, degraded, missing = parts[:5]
        groups = tuple(missing.split(",")) if missing else ()
        probs = tuple(map(float, parts[5].split(","))) if len(parts) > 5 else ()
        return Stored(version, variant, float(score), degraded == "1", groups, probs)
    except (UnicodeDecodeError, ValueError):
        return None


# SET each key with the same expiry: one command for a whole batch.
_SET_ALL_EX = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


class PredictionStore:
    """Redis adapter; every failure surfaces as ``FeatureStoreUnavailable`` (transient)."""

    def __init__(self, client: Client, prefix: str, ttl_seconds: int) -> None:
        self.client, self.prefix, self.ttl = client, prefix, ttl_seconds
        self._set_all = SlotScript(client, _SET_ALL_EX)

    def _key(self, kind: str, event_id: str) -> str:
        return f"{self.prefix}pred:{kind}:{event_id}"

    def put_many(self, kind: str, items: Iterable[tuple[str, Stored]]) -> int:
        pairs = list(items)
        return self.put_columns(
            kind,
            [e for e, _ in pairs],
            [s.model_version for _, s in pairs],
            [s.variant for _, s in pairs],
            [s.score for _, s in pairs],
            [s.degraded for _, s in pairs],
            [s.missing for _, s in pairs],
            None
            if not pairs or not pairs[0][1].probabilities
            else np.asarray([s.probabilities for _, s in pairs]),
        )

    def put_columns(
        self,
        kind: str,
        event_ids: Sequence[str],
        versions: Sequence[str],
        variants: Sequence[str],
        scores: Iterable[float],
        degraded: Sequence[bool] | None = None,
        missing: Sequence[Sequence[str]] | None = None,
        probabilities: Any = None,
    ) -> int:
        """A batch as columns (the worker's hot path): one script call. ``probabilities``: a
        multiclass model's (n, classes) array."""
        if not event_ids:
            return 0
        head = f"{self.prefix}pred:{kind}:"
        keys = [head + e for e in event_ids]
        n = len(event_ids)
        flags = degraded if degraded is not None else [False] * n
        groups = missing if missing is not None else [()] * n
        joined = {m: ",".join(m) for m in set(map(tuple, groups))}  # a few distinct per batch
        values = [
            f"{v}|{var}|{s!r}|{int(d)}|{joined[tuple(m)]}"
            for v, var, s, d, m in zip(
                versions, variants, map(float, scores), flags, groups, strict=True
            )
        ]
        if probabilities is not None:
            rows = (",".join(map(repr, row)) for row in probabilities.tolist())
            values = [f"{value}|{row}" for value, row in zip(values, rows, strict=True)]
        try:
            self._set_all(keys, [self.ttl], values)
        except REDIS_ERRORS as exc:
            raise refusal(exc, self.client, "EVALSHA", f"{head}*") or FeatureStoreUnavailable(
                f"prediction store: {reason(exc)}"
            ) from exc
        return len(keys)

    def get_many(self, kind: str, event_ids: Sequence[str]) -> list[Stored | None]:
        if not event_ids:
            return []
        try:
            raw = mget(self.client, [self._key(kind, e) for e in event_ids])
        except REDIS_ERRORS as exc:
            pattern = f"{self.prefix}pred:{kind}:*"
            raise refusal(exc, self.client, "MGET", pattern) or FeatureStoreUnavailable(
                f"prediction store: {reason(exc)}"
            ) from exc
        return [decode(r) for r in raw]
