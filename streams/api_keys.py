"""API keys for the HTTP API, kept in Redis, hashed.

A key is ``ssk_<id>_<secret>``. Redis keeps, under ``<prefix>apikey:<id>``, the SHA-256 of the
secret (a 32-byte random value: a slow hash adds nothing), the key's name, its creation time, its
rate limit and whether it is revoked. The secret is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from services.core.errors import FeatureStoreUnavailable
from services.redisconn.client import REDIS_ERRORS, Client, reason
from services.redisconn.refusal import refusal

PREFIX = "ssk_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    created_at: int
    rate_per_second: float  # 0: the stream's per-producer rate (STREAMSCORE_RATE_LIMIT__*)
    burst: int
    revoked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "rate_per_second": self.rate_per_second,
            "burst": self.burst,
            "revoked": self.revoked,
        }


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None.

    >>> parse("ssk_ab12_xyz"), parse("nope"), parse("ssk__x")
    (('ab12', 'xyz'), None, None)
    """
    if not token.startswith(PREFIX):
        return None
    key_id, _, secret = token[len(PREFIX) :].partition("_")
    if not key_id or not secret or not key_id.isalnum():
        return None
    return key_id, secret


class ApiKeys:
    """The key store. Every Redis failure surfaces as ``FeatureStoreUnavailable`` (transient)."""

    def __init__(self, client: Client, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}apikey:"

    def _call(self, fn: Any, command: str) -> Any:
        try:
            return fn()
        except REDIS_ERRORS as exc:
            raise refusal(exc, self._client, command, f"{self._prefix}*") or (
                FeatureStoreUnavailable(f"API keys: Redis did not answer: {reason(exc)}")
            ) from exc

    def create(self, name: str, rate_per_second: float = 0.0, burst: int = 0) -> tuple[ApiKey, str]:
        """A new key; returns it and the token (shown once)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id, name, int(time.time() * 1000), rate_per_second, burst)
        fields = {k: str(v) for k, v in key.to_dict().items()} | {"sha256": digest(secret)}
        self._call(lambda: self._client.hset(self._prefix + key_id, mapping=fields), "HSET")  # type: ignore[arg-type]
        return key, f"{PREFIX}{key_id}_{secret}"

    def _load(self, key_id: str) -> tuple[ApiKey, str] | None:
        raw = self._call(lambda: self._client.hgetall(self._prefix + key_id), "HGETALL")
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        key = ApiKey(
            d["id"],
            d["name"],
            int(d["created_at"]),
            float(d["rate_per_second"]),
            int(d["burst"]),
            d["revoked"] == "True",
        )
        return key, d["sha256"]

    def verify(self, token: str) -> ApiKey | None:
        """The key of ``token`` when it is valid and not revoked, else None."""
        parsed = parse(token)
        if parsed is None:
            return None
        found = self._load(parsed[0])
        if found is None:
            return None
        key, stored = found
        if key.revoked or not hmac.compare_digest(stored, digest(parsed[1])):
            return None
        return key

    def list(self) -> list[ApiKey]:
        names = self._call(lambda: list(self._client.scan_iter(match=self._prefix + "*")), "SCAN")
        keys = [self._load(n.decode()[len(self._prefix) :]) for n in names]
        return sorted((k for k, _ in filter(None, keys)), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id``; False when there is no such key."""
        if self._load(key_id) is None:
            return False
        self._call(lambda: self._client.hset(self._prefix + key_id, "revoked", "True"), "HSET")
        return True
