"""Batch reads and Lua scripts that stay correct on a Redis Cluster.

A Cluster refuses a command whose keys hash to different slots (CROSSSLOT), and a Lua script
may touch only the keys of one slot. Our keys keep their standalone names (no hash tags: a tag
would put every feature row, or every prediction, of a deployment on one shard, and would make
today's standalone data unreadable), so a batch is split **per slot**: one MGET, or one call
of the script, per slot; the calls for one shard go in one pipeline, so a batch costs one round
trip per shard whatever its size. On a single server (standalone or Sentinel) the same helpers
send one command for the whole batch, as before.

The per-shard pipelines are plain pipelines on each primary's own client, not redis-py's
cluster pipeline: redis-py 8's cluster pipeline blocks its ``evalsha`` method, and routes an
EVALSHA sent as a raw command by asking a node for its keys (``COMMAND GETKEYS``: EVALSHA's keys
are "movable"), one more round trip per call. A reply MOVED, ASK, TRYAGAIN, CLUSTERDOWN or a
lost connection (a failover) makes the client re-read the cluster's layout, and the calls that
failed are sent again, up to ``RETRIES`` times; the rest of the batch is not repeated. A layout
that cannot be read (no node answers, or every node refuses the user) is one more failed try.
What is still failing after that reaches the adapter, which catches ``REDIS_ERRORS``: redis-py's
``RedisClusterException`` (``SlotNotCoveredError`` among them) is not a ``RedisError``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)

from services.redisconn.client import REDIS_ERRORS, Client, reason

logger = logging.getLogger(__name__)
RETRIES = 3
# Between layout refreshes while a replica is being promoted (the gate above retries longer).
RETRY_PAUSE_SECONDS = 0.2
_REROUTE = (
    AskError,
    TryAgainError,
    ClusterDownError,
    SlotNotCoveredError,
    redis.ConnectionError,
    redis.TimeoutError,
)
Command = Callable[[list[int]], tuple[Any, ...]]


def by_slot(keys: Sequence[str]) -> dict[int, list[int]]:
    """Positions of ``keys`` grouped by their cluster hash slot, in first-seen order.

    >>> by_slot(["a", "b", "{a}x", "a"])
    {15495: [0, 2, 3], 3300: [1]}
    """
    out: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key_slot(key.encode()), []).append(i)
    return out


def per_slot(
    client: RedisCluster, keys: Sequence[str], groups: list[list[int]], command: Command
) -> list[Any]:
    """Run ``command(positions)`` (the arguments of one command over those keys, all of one
    slot) once for each of ``groups`` (``by_slot(keys)``), one pipeline per primary; returns
    the replies in the order of ``groups``.

    Raises:
        REDIS_ERRORS: a call still failing after ``RETRIES`` layout refreshes, or any other
            error reply (NOPERM, NOSCRIPT, ...), as redis-py raises it: a ``redis.RedisError``,
            an ``OSError`` or a ``RedisClusterException`` (no node answers for a slot).
    """
    slots = [key_slot(keys[g[0]].encode()) for g in groups]
    replies: list[Any] = [None] * len(groups)
    todo = list(range(len(groups)))
    for attempt in range(RETRIES + 1):
        failed: list[int] = []
        last: BaseException | None = None
        by_node: dict[str, list[int]] = {}
        nodes: dict[str, Any] = {}
        try:
            for i in todo:
                node = client.nodes_manager.get_node_from_slot(slots[i])
                by_node.setdefault(node.name, []).append(i)
                nodes[node.name] = node
        except SlotNotCoveredError as exc:
            failed, last = todo, exc
            by_node = {}
        for name, members in by_node.items():
            pipe = client.get_redis_connection(nodes[name]).pipeline(transaction=False)
            for i in members:
                pipe.execute_command(*command(groups[i]))  # type: ignore[no-untyped-call]  # untyped in redis-py
            try:
                out = pipe.execute(raise_on_error=False)
            except _REROUTE as exc:
                failed += members
                last = exc
                continue
            for i, reply in zip(members, out, strict=True):
                if isinstance(reply, _REROUTE):
                    failed.append(i)
                    last = reply
                else:
                    replies[i] = reply
        if not failed:
            return replies
        if attempt == RETRIES:
            assert last is not None  # noqa: S101 (failed is only filled with an error)
            raise last
        # MOVED is an AskError: the layout changed (a replica promoted, slots moved).
        time.sleep(RETRY_PAUSE_SECONDS * attempt)
        try:
            client.nodes_manager.initialize()
        except REDIS_ERRORS as exc:
            # No node answered CLUSTER SLOTS (all down, or all refusing the user): the next
            # try goes to the nodes last known, and its own failure is the one raised.
            logger.debug("cluster layout not read (try %d): %s", attempt + 1, reason(exc))
        todo = failed
    return replies


def mget(client: Client, keys: Sequence[str]) -> list[Any]:
    """Values of ``keys`` in order (None where missing): one MGET on a server; on a Cluster one
    MGET per slot, one pipeline per shard."""
    if not keys:
        return []
    if not isinstance(client, RedisCluster):
        return list(client.mget(keys))
    groups = list(by_slot(keys).values())
    replies = per_slot(client, keys, groups, lambda g: ("MGET", *(keys[i] for i in g)))
    out: list[Any] = [None] * len(keys)
    for group, reply in zip(groups, replies, strict=True):
        _raise_if_error(reply)
        for pos, value in zip(group, reply, strict=True):
            out[pos] = value
    return out


def _raise_if_error(reply: Any) -> None:
    if isinstance(reply, BaseException):
        raise reply


class SlotScript:
    """A Lua script over ``KEYS[i]`` with one argument per key (``ARGV[len(common) + i]``) after
    ``common`` arguments: the shape of every batch script we run (token buckets, the
    prediction store). Each call of the script must only depend on its own keys, so that a
    batch may be cut into one call per slot without changing its meaning."""

    def __init__(self, client: Client, text: str) -> None:
        self._client = client
        self._text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        # On one server redis-py's Script loads the text on NOSCRIPT and calls again.
        self._script = None if isinstance(client, RedisCluster) else client.register_script(text)

    def __call__(self, keys: Sequence[str], common: Sequence[Any], per_key: Sequence[Any]) -> Any:
        """The script's reply: on one server as it is; on a Cluster, for a script that returns
        one value per key, those values in the order of ``keys`` (else one None per key).

        Raises:
            REDIS_ERRORS: as redis-py raises them; the adapter wraps them.
        """
        if not keys:
            return []
        if self._script is not None:
            return self._script(keys=list(keys), args=[*common, *per_key])
        client = self._client
        if not isinstance(client, RedisCluster):  # pragma: no cover (set in __init__)
            raise TypeError("a cluster script needs a cluster client")

        def call(g: list[int]) -> tuple[Any, ...]:
            return (
                "EVALSHA",
                self.sha,
                len(g),
                *(keys[i] for i in g),
                *common,
                *(per_key[i] for i in g),
            )

        groups = list(by_slot(keys).values())
        replies = per_slot(client, keys, groups, call)
        if any(isinstance(r, NoScriptError) for r in replies):
            # A node that never saw the script (new, or a replica just promoted): load it on
            # every primary, then run the whole batch again (no call ran where NOSCRIPT came).
            client.script_load(self._text)
            redo = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            sub = [keys[p] for i in redo for p in groups[i]]
            subargs = [per_key[p] for i in redo for p in groups[i]]
            again = per_slot(
                client,
                sub,
                list(by_slot(sub).values()),
                lambda g: (
                    "EVALSHA",
                    self.sha,
                    len(g),
                    *(sub[i] for i in g),
                    *common,
                    *(subargs[i] for i in g),
                ),
            )
            for i, reply in zip(redo, again, strict=True):
                replies[i] = reply
        out: list[Any] = [None] * len(keys)
        for group, reply in zip(groups, replies, strict=True):
            _raise_if_error(reply)
            if isinstance(reply, list):  # a reply of one value per key; a count is dropped
                for pos, value in zip(group, reply, strict=True):
                    out[pos] = value
        return out
