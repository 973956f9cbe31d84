"""Predictions kept for the label horizon, so delayed labels can be joined to what was served.

One Redis key per event and kind (served or shadow), ``<prefix>pred:<kind>:<event_id>`` =
``version|variant|score``, with a TTL of the label horizon; the scoring worker writes a batch in
one pipelined round trip and the label join reads a batch with one MGET.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from services.core.errors import FeatureStoreUnavailable


@dataclass(frozen=True, slots=True)
class Stored:
    model_version: str
    variant: str
    score: float


def encode(stored: Stored) -> bytes:
    """
    >>> decode(encode(Stored("3", "champion", 0.25)))
    Stored(model_version='3', variant='champion', score=0.25)
    """
    return f"{stored.model_version}|{stored.variant}|{stored.score!r}".encode()


def decode(raw: bytes | str | None) -> Stored | None:
    if raw is None:
        return None
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        version, variant, score = text.split("|")
        return Stored(version, variant, float(score))
    except (UnicodeDecodeError, ValueError):
        return None


class PredictionStore:
    """Redis adapter; every failure surfaces as ``FeatureStoreUnavailable`` (transient)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.client, self.prefix, self.ttl = client, prefix, ttl_seconds

    def _key(self, kind: str, event_id: str) -> str:
        return f"{self.prefix}pred:{kind}:{event_id}"

    def put_many(self, kind: str, items: Iterable[tuple[str, Stored]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for event_id, stored in items:
            pipe.set(self._key(kind, event_id), encode(stored), ex=self.ttl)
            n += 1
        if n:
            try:
                pipe.execute()
            except (redis.RedisError, OSError) as exc:
                raise FeatureStoreUnavailable(f"prediction store: {exc}") from exc
        return n

    def get_many(self, kind: str, event_ids: Sequence[str]) -> list[Stored | None]:
        if not event_ids:
            return []
        try:
            raw = self.client.mget([self._key(kind, e) for e in event_ids])
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(f"prediction store: {exc}") from exc
        return [decode(r) for r in raw]
