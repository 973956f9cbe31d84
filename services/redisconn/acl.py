"""Redis ACL users per role: each may touch only its own keys, with only the commands it sends.

The keys (all under the settings' ``key_prefix``): ``feat:*`` feature rows, ``pred:*`` the
prediction store, ``rl:stream:*`` the stream's rate-limit buckets, ``rl:api:*`` the API keys'
buckets, ``apikey:*`` the API keys. Commands run inside our Lua scripts are checked against the
caller's rules as well, so a script cannot widen a role.

======== ================================================================================
role     may
======== ================================================================================
worker   read ``feat:*``; read and write ``pred:*`` and ``rl:stream:*``
control  read ``feat:*`` and ``pred:*`` (the label join, training sets)
api      read ``feat:*`` and ``apikey:*``; read and write ``rl:api:*``
replay   read ``feat:*``
cli      read every key under the prefix (explain, lookups); writes nothing
admin    everything (``features load``, ``api keys create``, the cluster's own set-up)
======== ================================================================================
"""

from __future__ import annotations

import hashlib

ROLES = ("worker", "control", "api", "replay", "cli")
ADMIN_ROLE = "admin"
# The nodes' replication link (a replica reads its primary): replication commands, no keys.
REPLICATION_USER = "streamscore-replication"

# What every client sends besides its data commands: the handshake, PING, and the layout
# queries of redis-py's cluster client (CLUSTER SLOTS/SHARDS, COMMAND for key positions).
_CONNECTION = (
    "+auth +hello +ping +echo +select +readonly +readwrite +client|setname "
    "+client|id +cluster|slots +cluster|shards +cluster|nodes +cluster|info +cluster|myid "
    "+command +info"
)
# The token-bucket and prediction scripts, and the commands they call.
_SCRIPTS = "+evalsha +eval +script|load +script|exists +time"


def user(role: str) -> str:
    """The Redis user of ``role``.

    >>> user("worker"), user("admin")
    ('streamscore-worker', 'streamscore-admin')
    """
    return f"streamscore-{role}"


def rules(role: str, prefix: str) -> str:
    """The ACL rules of ``role`` for keys under ``prefix`` (without the user's password).

    >>> rules("worker", "ss:").split(" +")[0]
    'resetkeys resetchannels -@all %R~ss:feat:* ~ss:pred:* ~ss:rl:stream:*'

    Raises:
        ValueError: an unknown role.
    """
    p = prefix
    if role == ADMIN_ROLE:
        return "allkeys allchannels +@all"
    keys = {
        # ~ (read and write) on pred: EVALSHA declares its keys read-write, so a write-only
        # selector would refuse the prediction script.
        "worker": f"%R~{p}feat:* ~{p}pred:* ~{p}rl:stream:*",
        "control": f"%R~{p}feat:* %R~{p}pred:*",
        "api": f"%R~{p}feat:* %R~{p}apikey:* ~{p}rl:api:*",
        "replay": f"%R~{p}feat:*",
        "cli": f"%R~{p}*",
    }
    commands = {
        "worker": f"+get +mget +set +hmget +hget +hset +pexpire {_SCRIPTS}",
        "control": "+get +mget",
        "api": f"+get +mget +hgetall +hmget +hget +hset +pexpire {_SCRIPTS}",
        "replay": "+get +mget",
        "cli": "+get +mget +hgetall +scan +ttl +type +exists",
    }
    if role not in keys:
        raise ValueError(f"unknown role {role!r}: one of {', '.join((*ROLES, ADMIN_ROLE))}")
    return f"resetkeys resetchannels -@all {keys[role]} {_CONNECTION} {commands[role]}"


def replication_rules() -> str:
    """What a replica's link to its primary needs, and nothing else."""
    return f"resetkeys resetchannels -@all +psync +replconf +ping +auth +hello {_CONNECTION}"


def config_line(name: str, password: str, acl: str) -> str:
    """A ``user`` line of redis.conf; the password appears only as its SHA-256.

    >>> config_line("u", "pw", "+ping")[:26]
    'user u reset on #30c952fab'
    """
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user {name} reset on #{digest} {acl}"
