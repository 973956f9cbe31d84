"""Token buckets in Redis (one Lua call per batch for all its producers: one command, one round
trip; on a Redis Cluster one call per slot, pipelined: one round trip per shard), and the pure
split of a batch into admitted and rate-limited messages.

Each bucket is refilled and taken from by itself (the script loops over independent keys), so
cutting a batch's call per slot changes nothing but the number of commands. The keys keep
their standalone names: no hash tag, which would put every producer's bucket on one shard."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from services.core.errors import FeatureStoreUnavailable
from services.core.records import PRODUCER_HEADER
from services.redisconn.client import REDIS_ERRORS, Client, reason
from services.redisconn.refusal import refusal
from services.redisconn.slots import SlotScript

# Atomic refill-and-take for every bucket of a batch (KEYS[i] wants ARGV[i + 2] tokens). Time
# comes from the Redis server, so every worker sees one clock.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
-- TIME before writes is safe: Redis 5+ replicates a script's effects, not the script.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = math.ceil(burst / rate * 1000) + 60000
local out = {}
for i = 1, #KEYS do
  local want = tonumber(ARGV[i + 2])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], ttl)
  out[i] = granted
end
return out
"""

# Tokens handed back (a deferred message that was charged is read and charged again later).
_GIVE = """
local burst = tonumber(ARGV[1])
for i = 1, #KEYS do
  local tokens = tonumber(redis.call('HGET', KEYS[i], 'tokens'))
  if tokens then
    redis.call('HSET', KEYS[i], 'tokens', tostring(math.min(burst, tokens + tonumber(ARGV[i + 1]))))
  end
end
return #KEYS
"""


# The producer id the HTTP API publishes its events with: ``api:<key id>``.
API_PRODUCER_PREFIX = "api:"
STREAM_NAMESPACE = "stream"
API_NAMESPACE = "api"


class Limiter(Protocol):
    def take(self, requested: Mapping[str, int]) -> dict[str, int]:
        """Tokens granted per producer (at most what was requested)."""
        ...

    def give_back(self, returned: Mapping[str, int]) -> None:
        """Tokens taken for messages that were not handled after all (deferred)."""
        ...


class ChargeOnce:
    """One batch's view of a limiter: a retried batch (the feature store failed) is charged
    once, and its refund is made once, however often the batch is processed.

    >>> class Counting:
    ...     taken = 0
    ...     def take(self, requested):
    ...         self.taken += sum(requested.values())
    ...         return dict(requested)
    ...     def give_back(self, returned):
    ...         self.taken -= sum(returned.values())
    >>> inner = Counting()
    >>> once = ChargeOnce(inner)
    >>> once.take({"a": 3}) == once.take({"a": 3}) == {"a": 3}
    True
    >>> once.give_back({"a": 1}); once.give_back({"a": 1}); inner.taken
    2
    """

    def __init__(self, inner: Limiter) -> None:
        self._inner = inner
        self._granted: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
        self._given: set[tuple[tuple[str, int], ...]] = set()

    def take(self, requested: Mapping[str, int]) -> dict[str, int]:
        key = tuple(sorted(requested.items()))
        if key not in self._granted:
            self._granted[key] = self._inner.take(requested)
        return self._granted[key]

    def give_back(self, returned: Mapping[str, int]) -> None:
        key = tuple(sorted(returned.items()))
        if key not in self._given:
            self._inner.give_back(returned)
            self._given.add(key)


class RedisTokenBuckets:
    """One bucket per producer under ``<prefix>rl:<namespace>:<producer>``; ``rate`` tokens/s,
    ``burst`` max. The stream's buckets (namespace ``stream``) and the HTTP API's per-key
    buckets (``api``) never share a key, whatever id a producer claims in its header."""

    def __init__(
        self,
        client: Client,
        prefix: str,
        rate: float,
        burst: int,
        *,
        namespace: str = STREAM_NAMESPACE,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}rl:{namespace}:"
        self._rate, self._burst = rate, burst
        self._script = SlotScript(client, _TAKE)
        self._give = SlotScript(client, _GIVE)

    def take(self, requested: Mapping[str, int]) -> dict[str, int]:
        if not requested:
            return {}
        names = list(requested)
        try:
            granted = self._script(
                [self._prefix + n for n in names],
                [self._rate, self._burst],
                [requested[n] for n in names],
            )
        except REDIS_ERRORS as exc:
            raise refusal(exc, self._client, "EVALSHA", f"{self._prefix}*") or (
                FeatureStoreUnavailable(f"rate-limit buckets unavailable: {reason(exc)}")
            ) from exc
        return {n: int(g) for n, g in zip(names, granted, strict=True)}

    def give_back(self, returned: Mapping[str, int]) -> None:
        names = [n for n, k in returned.items() if k > 0]
        if not names:
            return
        try:
            self._give(
                [self._prefix + n for n in names], [self._burst], [returned[n] for n in names]
            )
        except REDIS_ERRORS as exc:
            raise refusal(exc, self._client, "EVALSHA", f"{self._prefix}*") or (
                FeatureStoreUnavailable(f"rate-limit buckets unavailable: {reason(exc)}")
            ) from exc


def producer_of(key: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> str:
    """The producer id: the ``producer-id`` header, else the key, else ``anonymous``.

    >>> producer_of(b"u1", [("producer-id", b"web")]), producer_of(b"u1", []), producer_of(None, [])
    ('web', 'u1', 'anonymous')
    """
    for name, value in headers:
        if name == PRODUCER_HEADER and value:
            return value[:128].decode("utf-8", errors="replace")
    if key:
        return key[:128].decode("utf-8", errors="replace")
    return "anonymous"


def take_for(limiter: Limiter, producers: Sequence[str]) -> dict[str, int]:
    """Tokens for a batch's producers. Events the HTTP API published (producer
    ``api:<key id>``) were charged to their key when the API admitted them: they pass free
    here, rather than being charged twice at two different rates.

    >>> class All:
    ...     def take(self, requested): return dict(requested)
    ...     def give_back(self, returned): pass
    >>> take_for(All(), ["a", "api:k1", "a"])
    {'a': 2, 'api:k1': 1}
    """
    counts = Counter(producers)
    charged = {p: n for p, n in counts.items() if not p.startswith(API_PRODUCER_PREFIX)}
    granted = dict(limiter.take(charged)) if charged else {}
    granted.update({p: n for p, n in counts.items() if p.startswith(API_PRODUCER_PREFIX)})
    return granted


def charged_only(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` without the producers ``take_for`` lets pass free (nothing to give back)."""
    return {p: n for p, n in counts.items() if not p.startswith(API_PRODUCER_PREFIX)}


def split_by_quota(producers: Sequence[str], granted: Mapping[str, int]) -> list[bool]:
    """Admit each producer's first ``granted`` messages in batch order; the rest are over quota.

    >>> split_by_quota(["a", "b", "a", "a"], {"a": 2, "b": 1})
    [True, True, True, False]
    """
    used: Counter[str] = Counter()
    out = []
    for p in producers:
        used[p] += 1
        out.append(used[p] <= granted.get(p, 0))
    return out
