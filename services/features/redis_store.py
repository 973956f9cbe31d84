"""FeatureStore on Redis: one key per entity holding packed float32, one MGET per batch.

Packed float32 was measured at 3.2–3.6 µs per event for a batch read, against 28–35 µs for a
pipelined HGETALL per entity (``../shared/broker-notes.md``). Keys are versioned by the spec, so a
new spec never reads rows written for an old one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import redis

from services.core.errors import FeatureStoreUnavailable
from services.features.spec import FeatureSpec
from services.features.store import Lookup, Matrix, lookup_from_rows

logger = logging.getLogger(__name__)
_LOAD_CHUNK = 5000


class RedisFeatureStore:
    """Reads and writes feature rows in Redis (``<prefix>feat:<spec version>:<group>:<id>``)."""

    def __init__(
        self, client: redis.Redis, spec: FeatureSpec, key_prefix: str, ttl_seconds: int = 0
    ) -> None:
        self.spec = spec
        self._client = client
        self._prefix = f"{key_prefix}feat:{spec.version}:"
        self._ttl = ttl_seconds or None

    def key(self, group: str, entity: str) -> str:
        return f"{self._prefix}{group}:{entity}"

    def get_many(self, requests: dict[str, Sequence[str]]) -> dict[str, Lookup]:
        # One MGET for every group: a batch costs one round trip whatever its size.
        plan = [(name, list(dict.fromkeys(keys))) for name, keys in requests.items()]
        redis_keys = [self.key(name, k) for name, uniq in plan for k in uniq]
        try:
            raw = self._client.mget(redis_keys) if redis_keys else []
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(
                f"redis MGET of {len(redis_keys)} keys failed: {exc}"
            ) from exc
        out: dict[str, Lookup] = {}
        pos = 0
        for name, uniq in plan:
            group = self.spec.group(name)
            rows: dict[str, np.ndarray] = {}
            for entity, blob in zip(uniq, raw[pos : pos + len(uniq)], strict=True):
                if not isinstance(blob, bytes):  # None: not loaded (clients never decode here)
                    continue
                if len(blob) != 4 * group.width:
                    # A row of another width is not ours to trust: count it as missing.
                    logger.warning(
                        "feature row %s has %d bytes, expected %d: using defaults",
                        self.key(name, entity),
                        len(blob),
                        4 * group.width,
                    )
                    continue
                rows[entity] = np.frombuffer(blob, dtype=np.float32)
            pos += len(uniq)
            out[name] = lookup_from_rows(group, requests[name], rows)
        return out

    def put_many(self, group: str, keys: Sequence[str], values: Matrix) -> int:
        g = self.spec.group(group)
        matrix = np.ascontiguousarray(values, dtype=np.float32).reshape(len(keys), g.width)
        try:
            for start in range(0, len(keys), _LOAD_CHUNK):
                pipe = self._client.pipeline(transaction=False)
                for key, row in zip(
                    keys[start : start + _LOAD_CHUNK],
                    matrix[start : start + _LOAD_CHUNK],
                    strict=True,
                ):
                    pipe.set(self.key(group, key), row.tobytes(), ex=self._ttl)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(f"redis write of {group} features failed: {exc}") from exc
        return len(keys)
