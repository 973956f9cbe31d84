"""Redis refusing this process's user, told from an outage, and watched across the process.

An outage (no answer, a lost connection, a failover) passes: the dependency gate retries, then
pauses or degrades. A refusal does not pass until a person acts: WRONGPASS (the user's password
changed, or the user was disabled; redis-py's ``AuthenticationError``, met when a connection
is made, so after a rotation only new connections meet it) or NOPERM (an ACL no longer grants
a command or a key pattern; met at once on every connection). Here:

- ``refusal`` turns such a redis-py error (or one raised from it: a Cluster client wraps what
  its nodes answered; ``services.redisconn.client.cause_of`` finds it) into ``RedisRefused``:
  one line naming the server, the user, the command and the key pattern (never a key holding
  an entity id, never the password), counted in
  ``streamscore_redis_refusals_total{cause,command}``;
- ``RefusalWatch`` keeps the process's current runs of refusals, one per command and key
  pattern (a feature read that answers says nothing about a prediction-store write that is
  refused); readiness fails while one lasts, and one that has lasted
  ``redis.auth_failure_seconds`` stops the worker with its line (exit 2);
- ``watch_refusals`` stops a process whose loop is not ours (the control plane's faust) the
  same way, from a daemon thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from redis.cluster import RedisCluster

from services.core import metrics
from services.core.errors import RedisRefused
from services.redisconn.client import WRONGPASS, Client, reason, refusing


def _connection(client: Client) -> dict[str, Any]:
    """The client's connection settings (user, host, port), whatever its deployment."""
    if isinstance(client, RedisCluster):
        return dict(client.nodes_manager.connection_kwargs)
    return dict(client.connection_pool.connection_kwargs)


def describe(cause: str, user: str, where: str, command: str, keys: str, detail: str) -> str:
    """The refusal's one line.

    >>> describe("noperm", "streamscore-worker", "h:1", "MGET", "ss:feat:*",
    ...     "this user has no permissions to run the 'mget' command")[:78]
    "redis at h:1 refused user 'streamscore-worker' MGET on ss:feat:* (NOPERM: this"
    """
    if cause == WRONGPASS:
        return (
            f"redis at {where} refused user {user!r} (WRONGPASS: wrong password, or the user is "
            f"disabled) for {command} on {keys}: check STREAMSCORE_REDIS__USERNAME and "
            "STREAMSCORE_REDIS__PASSWORD against the server's ACL user"
        )
    return (
        f"redis at {where} refused user {user!r} {command} on {keys} (NOPERM: {detail}): its ACL "
        f"must grant {command} on {keys} (ACL SETUSER {user} +{command.lower()} ...)"
    )


def refusal(exc: BaseException, client: Client, command: str, keys: str) -> RedisRefused | None:
    """``RedisRefused`` (counted) when ``exc`` is Redis refusing the user, else None.

    Args:
        command: the command that was sent (``MGET``, ``EVALSHA``, ``HGETALL``).
        keys: the key pattern it was sent on (``<prefix>feat:<version>:*``): never a key of one
            entity (its id would reach a log line).
    """
    found = refusing(exc)
    if found is None:
        return None
    cause, refused = found
    conn = _connection(client)
    user = str(conn.get("username") or "default")
    where = f"{conn.get('host', '?')}:{conn.get('port', 6379)}"
    metrics.REDIS_REFUSALS.labels(cause=cause, command=command).inc()
    detail = reason(refused)
    return RedisRefused(
        describe(cause, user, where, command, keys, detail), command=command, cause=cause
    )


class RefusalWatch:
    """The process's current runs of refusals, one per caller and refusal (thread-safe: the
    worker's Redis calls run on its IO threads). A caller is what the process asked Redis
    for (``score``: a batch's rate limits and features; ``remember``: the prediction store),
    so a feature read that answers does not end a run of refused prediction-store writes.

    Args:
        clock: monotonic seconds (a test's own).
    """

    # A refusal not seen again for this long is over (nothing asked Redis meanwhile).
    GAP_SECONDS = 60.0
    # A caller retrying each second logs the same refusal once per this many seconds, not
    # once per try.
    LOG_EVERY_SECONDS = 30.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (caller, line) -> (first seen, last seen, the latest refusal)
        self._runs: dict[tuple[str, str], tuple[float, float, RedisRefused]] = {}
        self._logged: dict[str, float] = {}  # refusal line -> when it was last logged

    def failed(self, caller: str, refused: RedisRefused) -> bool:
        """One refusal met by ``caller``: its run goes on (or starts). Returns whether to log
        it: the first time this refusal (its line: cause, user, command, keys) is met, then
        once per ``LOG_EVERY_SECONDS``, whichever caller meets it.

        >>> t = [0.0]; w = RefusalWatch(clock=lambda: t[0])
        >>> r = RedisRefused("redis refused MGET", command="MGET", cause="noperm")
        >>> w.failed("label_join", r), w.failed("retrain", r)
        (True, False)
        >>> t[0] = 31.0; w.failed("label_join", r)
        True
        """
        now = self._clock()
        what = (caller, refused.message)
        with self._lock:
            run = self._runs.get(what)
            first = run[0] if run is not None and now - run[1] <= self.GAP_SECONDS else now
            self._runs[what] = (first, now, refused)
            logged = self._logged.get(refused.message)
            if logged is not None and now - logged < self.LOG_EVERY_SECONDS:
                return False
            self._logged[refused.message] = now
            return True

    def reset(self) -> None:
        """Forget every run (a test's start: the watch is one per process)."""
        with self._lock:
            self._runs.clear()
            self._logged.clear()

    def answered(self, caller: str) -> None:
        """Redis did what ``caller`` asked: its runs are over. Cheap when there is none (every
        batch)."""
        if not self._runs:
            return
        with self._lock:
            for what in [w for w in self._runs if w[0] == caller]:
                del self._runs[what]

    def current(self) -> tuple[RedisRefused, float] | None:
        """The longest run still going: its latest refusal and how long it has lasted."""
        now = self._clock()
        with self._lock:
            live = [r for r in self._runs.values() if now - r[1] <= self.GAP_SECONDS]
        if not live:
            return None
        first, last, refused = min(live, key=lambda r: r[0])
        return refused, last - first

    def problem(self) -> str | None:
        """Readiness: the refusal going on, one line; None when there is none.

        >>> w = RefusalWatch(clock=lambda: 5.0)
        >>> r = RedisRefused("redis refused MGET", command="MGET", cause="noperm")
        >>> _ = w.failed("score", r)
        >>> w.problem()
        'redis refused MGET'
        >>> w.answered("remember"); w.problem()
        'redis refused MGET'
        >>> w.answered("score"); w.problem() is None
        True
        """
        run = self.current()
        return None if run is None else run[0].message

    def verdict(self, seconds: float) -> RedisRefused | None:
        """The stop, once a run has lasted ``seconds``: its line, with how long it lasted."""
        run = self.current()
        if run is None or run[1] < seconds:
            return None
        refused, lasted = run
        return RedisRefused(
            f"{refused.message} (refused for {lasted:.0f} s)",
            command=refused.command,
            cause=refused.cause,
        )


def watch_refusals(
    seconds: float,
    stop: Callable[[RedisRefused], None],
    watch: RefusalWatch | None = None,
    every: float = 1.0,
) -> threading.Event:
    """Look at ``watch`` every ``every`` seconds on a daemon thread; call ``stop`` with the
    verdict once a refusal has lasted ``seconds`` (``redis.auth_failure_seconds``). Returns the
    event that ends the thread.

    For a process whose loop is not ours (the control plane's faust): the worker raises the
    verdict from its own loop instead (``streams.worker.refused``)."""
    watched = watch if watch is not None else WATCH
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            verdict = watched.verdict(seconds)
            if verdict is not None:
                stop(verdict)
                return
            done.wait(every)  # the period between two looks, not a synchronisation

    threading.Thread(target=run, name="redis-refusal-watch", daemon=True).start()
    return done


# One per process: the worker's feature reads, rate limits and prediction store, the control
# plane's label join and training reads, and readiness.
WATCH = RefusalWatch()
