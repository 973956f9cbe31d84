"""One Redis client from ``RedisSettings``: a server, a Sentinel-watched primary or a Cluster.

Every adapter (feature store, prediction store, rate limits, API keys) and every probe gets its
client here, so the deployment, the ACL user and TLS are chosen in one place. Secrets go to
redis-py and nowhere else: the errors this module raises name the host, the user and the cause,
never the password.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, RedisRefused
from services.core.settings import RedisSettings

logger = logging.getLogger(__name__)

# Both speak the commands we use; the cluster client routes each key to its shard.
Client: TypeAlias = "redis.Redis | RedisCluster"
# What a Redis call may raise, for every adapter to catch: redis-py's errors, socket errors, and
# the Cluster client's own RedisClusterException (SlotNotCoveredError among them), which in
# redis-py 8 is no RedisError: it is what the client raises when no node answers while it reads
# the cluster's layout, or when every node refuses its user.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)

WRONGPASS = "wrongpass"
NOPERM = "noperm"
# The command a Cluster client sends when it reads the cluster's layout.
LAYOUT_COMMAND = "CLUSTER SLOTS"


def tls_options(cfg: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for ``cfg`` (empty when TLS is off).

    >>> tls_options(RedisSettings())
    {}
    >>> sorted(tls_options(RedisSettings(url="rediss://h:1/0")))
    ['ssl_ca_certs', 'ssl_cert_reqs', 'ssl_certfile', 'ssl_check_hostname', 'ssl_keyfile']
    """
    if not cfg.use_tls:
        return {}
    return {
        "ssl_ca_certs": str(cfg.tls_ca_file) if cfg.tls_ca_file else None,
        "ssl_certfile": str(cfg.tls_cert_file) if cfg.tls_cert_file else None,
        "ssl_keyfile": str(cfg.tls_key_file) if cfg.tls_key_file else None,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": cfg.tls_check_hostname,
    }


def effective_url(cfg: RedisSettings, url: str) -> str:
    """``url`` with the rediss:// scheme when TLS is on (``tls`` set with a redis:// URL).

    >>> effective_url(RedisSettings(tls=True), "redis://h:1/0")
    'rediss://h:1/0'
    """
    if cfg.use_tls and url.startswith("redis://"):
        return "rediss://" + url[len("redis://") :]
    return url


def where(url: str) -> str:
    """host:port of ``url`` for messages (never a credential: the settings refuse them).

    >>> where("rediss://10.0.0.5:6380/0")
    '10.0.0.5:6380'
    """
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else url


def reason(exc: BaseException) -> str:
    """``exc`` as one line, without the command a pipeline annotates it with (its arguments
    would carry feature values or key names into a log).

    >>> reason(redis.ResponseError("Command # 3 (SET k \\x00) of pipeline caused error: NOPERM x"))
    'NOPERM x'
    """
    text = " ".join(str(exc).split())
    if text.startswith("Command # ") and " of pipeline caused error: " in text:
        text = text.split(" of pipeline caused error: ", 1)[1]
    return text


def _refused_one(exc: BaseException) -> str | None:
    """``wrongpass`` or ``noperm`` when ``exc`` itself is Redis refusing the user."""
    text = reason(exc)
    if (
        isinstance(exc, redis.AuthenticationError)
        or text.startswith("WRONGPASS")
        or "username-password pair" in text
    ):
        return WRONGPASS
    if isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM"):
        return NOPERM
    return None


def refusing(exc: BaseException) -> tuple[str, BaseException] | None:
    """The cause (``wrongpass``, ``noperm``) of a refusal in ``exc``'s chain, and the error
    that carries it: ``exc``, or what it was raised from or while handling. A Cluster client
    wraps a node's answer in its own exception (``raise RedisClusterException(...) from`` the
    WRONGPASS), and an adapter wraps that again."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = _refused_one(current)
        if cause is not None:
            return cause, current
        current = current.__cause__ or current.__context__
    return None


def cause_of(exc: BaseException) -> str | None:
    """``wrongpass`` or ``noperm`` when ``exc``, or an error in its chain, is Redis refusing
    the user, else None.

    >>> cause_of(redis.AuthenticationError("invalid username-password pair"))
    'wrongpass'
    >>> cause_of(redis.exceptions.NoPermissionError("this user has no permissions to run "
    ...     "the 'mget' command"))
    'noperm'
    >>> cause_of(redis.ConnectionError("Connection refused")) is None
    True
    >>> layout = RedisClusterException("Redis Cluster cannot be connected")  # every node
    >>> layout.__cause__ = redis.AuthenticationError("invalid username-password pair")
    >>> wrapped = FeatureStoreUnavailable("redis at h:1 unavailable")  # and an adapter's
    >>> wrapped.__cause__ = layout
    >>> cause_of(layout), cause_of(wrapped)
    ('wrongpass', 'wrongpass')
    """
    found = refusing(exc)
    return None if found is None else found[0]


def describe(exc: BaseException, cfg: RedisSettings, address: str) -> str:
    """One line for a failure to reach or use Redis: what, where, as whom, and the fix.

    >>> cfg = RedisSettings(username="worker")
    >>> describe(redis.AuthenticationError("invalid username-password pair"), cfg, "h:1")
    "redis at h:1 refused user 'worker': wrong password, or the user is disabled"
    """
    user = cfg.username or "default"
    text = reason(exc)
    refused = refusing(exc)
    if refused is not None and refused[0] == WRONGPASS:
        return f"redis at {address} refused user {user!r}: wrong password, or the user is disabled"
    if refused is not None:
        return f"redis at {address}: user {user!r} lacks a permission: {reason(refused[1])}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            cause
        ):
            return (
                f"redis at {address}: TLS certificate not trusted (check "
                f"STREAMSCORE_REDIS__TLS_CA_FILE={cfg.tls_ca_file or 'the system CAs'})"
            )
        cause = cause.__cause__ or cause.__context__
    return f"redis at {address} unavailable: {text}"


def connect(cfg: RedisSettings, url: str, *, socket_timeout: float | None = None) -> Client:
    """A client for the deployment ``cfg`` selects, at ``url`` (the URL in effect: the
    configured one or the embedded server's).

    Raises:
        RedisRefused: a Cluster client was refused its user (a wrong password, a disabled user,
            an ACL without CLUSTER SLOTS) while it read the cluster's layout (it does so when
            built): one line naming the node and the user, counted as a refusal.
        FeatureStoreUnavailable: a Cluster client could not read the cluster's layout: one line
            naming the node, the user and the cause.
    """
    timeout = socket_timeout or cfg.socket_timeout_seconds
    password = cfg.password.get_secret_value() if cfg.password else None
    common: dict[str, Any] = {
        "username": cfg.username,
        "password": password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    } | tls_options(cfg)
    url = effective_url(cfg, url)
    if cfg.mode == "cluster":
        try:
            # Startup nodes answer CLUSTER SLOTS once here; later layout changes (a replica
            # promoted) are followed on MOVED and on connection errors.
            return RedisCluster.from_url(url, **common)
        except REDIS_ERRORS as exc:
            line = describe(exc, cfg, where(url))
            cause = cause_of(exc)
            if cause is None:
                raise FeatureStoreUnavailable(line) from exc
            # Not an outage: no retry helps until a person fixes the user or its grant.
            metrics.REDIS_REFUSALS.labels(cause=cause, command=LAYOUT_COMMAND).inc()
            raise RedisRefused(line, command=LAYOUT_COMMAND, cause=cause) from exc
    if cfg.mode == "sentinel":
        # The settings refuse sentinel mode without sentinels.
        hosts = [
            (h, int(p))
            for h, _, p in (s.strip().rpartition(":") for s in (cfg.sentinels or "").split(","))
        ]
        sentinel_password = (
            cfg.sentinel_password.get_secret_value() if cfg.sentinel_password else None
        )
        tls = tls_options(cfg) | ({"ssl": True} if cfg.use_tls else {})
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
            hosts,
            sentinel_kwargs={
                "username": cfg.sentinel_username,
                "password": sentinel_password,
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
            | tls,
            **(common | tls),
        )
        db = int(urlsplit(url).path.strip("/") or 0) if cfg.url else 0
        primary: redis.Redis = sentinel.master_for(cfg.sentinel_service, db=db)  # type: ignore[no-untyped-call]  # untyped in redis-py
        return primary
    return redis.Redis.from_url(url, **common)


def ping(client: Client) -> bool:
    """True when the server (every primary, for a cluster) answers PING."""
    return bool(client.ping())
