"""Three Apache Kafka nodes (KRaft, broker and controller in each JVM) on loopback, secured as in
production: SASL_SSL with SCRAM-SHA-512 for clients, mutual TLS between the nodes, ACLs per
principal, replication factor 3 and ``min.insync.replicas=2``.

Files under ``home/cluster``: ``ca/`` (the CA, kept across restarts), ``secrets.json`` (each
principal's password, owner-only), ``env/<role>.env`` (the settings a role runs with) and
``node-<i>/`` (configuration, certificate and data of each node).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from pydantic import SecretStr

from services.core.errors import EmbeddedStackError
from services.core.settings import LocalSettings, Settings
from services.embedded import kafka as apache_kafka
from services.embedded import redis_cluster, tls
from services.embedded.private import write_private
from services.kafka.acls import ADMIN, BROKER, ROLES, Grant, principal, super_users
from services.kafka.config import admin_config
from services.redisconn import acl

NODES = (1, 2, 3)
MECHANISM = "SCRAM-SHA-512"
FORMAT_ARGS = "format.args"  # the storage format's arguments, credentials included, while it runs
SECRETS_FILE = "secrets.json"
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}


def node_name(node: int) -> str:
    return f"kafka-{node}"


def client_port(local: LocalSettings, node: int) -> int:
    """Clients' SASL_SSL port of ``node``; the nodes' own TLS port is 10 above, the
    controller's 20 above.

    >>> client_port(LocalSettings(), 2)
    19193
    """
    return local.cluster_port + node - 1


def bootstrap(local: LocalSettings) -> str:
    return ",".join(f"127.0.0.1:{client_port(local, n)}" for n in NODES)


def render_node_properties(local: LocalSettings, node: int, node_dir: Path, ca: Path) -> str:
    """One node's server.properties.

    >>> p = render_node_properties(LocalSettings(), 1, Path("/n"), Path("/ca.pem"))
    >>> "allow.everyone.if.no.acl.found=false" in p and "min.insync.replicas=2" in p
    True
    """
    port = client_port(local, node)
    voters = ",".join(f"{n}@127.0.0.1:{client_port(local, n) + 20}" for n in NODES)
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join(
        [
            "# Written by `streamscore local up --cluster`: node of a three-node KRaft cluster.",
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters}",
            # CLIENT: SASL_SSL for every streamscore role; INTERNAL and CONTROLLER: the nodes
            # only, each proving who it is with its certificate (mutual TLS).
            f"listeners=CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{port + 10},"
            f"CONTROLLER://127.0.0.1:{port + 20}",
            f"advertised.listeners=CLIENT://127.0.0.1:{port},INTERNAL://127.0.0.1:{port + 10}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=INTERNAL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"listener.name.client.scram-sha-512.sasl.jaas.config={scram}",
            "listener.name.internal.ssl.client.auth=required",
            "listener.name.controller.ssl.client.auth=required",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={node_dir / 'node.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca}",
            # A node's certificate DN "CN=streamscore-broker,O=..." is the principal
            # User:streamscore-broker, a super user like the admin.
            "ssl.principal.mapping.rules=RULE:^CN=(.*?),O=.*$/$1/,DEFAULT",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users={super_users()}",
            f"log.dirs={node_dir / 'data'}",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            "offsets.topic.num.partitions=6",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "transaction.state.log.num.partitions=6",
            "share.coordinator.state.topic.replication.factor=3",
            "share.coordinator.state.topic.min.isr=2",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            # Three JVMs share two cores: few threads each.
            "num.network.threads=2",
            "num.io.threads=2",
            "num.replica.fetchers=1",
            "background.threads=2",
            "log.retention.hours=168",
            "",
        ]
    )


def argfile(args: list[str]) -> str:
    r"""``args`` as a Java launcher argument file (``java @file``): one per line, each quoted
    (a path may hold spaces, a ``#`` would start a comment), backslashes and quotes escaped.

    >>> argfile(["a b", "p#w"])
    '"a b"\n"p#w"\n'
    """
    quoted = ('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
    return "".join(f"{q}\n" for q in quoted)


def passwords(cluster_dir: Path) -> dict[str, str]:
    """Each principal's password: made once (random), then read back from ``secrets.json``.

    Raises:
        EmbeddedStackError: the file exists but cannot be read or lacks a principal.
    """
    path = cluster_dir / SECRETS_FILE
    users = [ADMIN, *(principal(r) for r in ROLES)]
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EmbeddedStackError(f"cannot read {path}: {exc}") from exc
        missing = [u for u in users if not isinstance(found.get(u), str)]
        if missing:
            raise EmbeddedStackError(
                f"{path} has no password for {', '.join(missing)}; "
                "run `streamscore local down --purge` and start again"
            )
        return {u: found[u] for u in users}
    made = {u: secrets.token_urlsafe(24) for u in users}
    write_private(path, json.dumps(made, indent=2))
    return made


def role_settings(settings: Settings, user: str, password: str) -> Settings:
    """``settings`` connecting to the cluster as ``user``."""
    ca = settings.home / "cluster" / "ca" / tls.CA_CERT
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap(settings.local),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_username": user,
            "sasl_password": SecretStr(password),
            "ssl_ca_location": ca,
            # faust's own topics get the cluster's replication factor too.
            "control_replication_factor": len(NODES),
        }
    )
    return settings.model_copy(update={"kafka": kafka})


def as_role(settings: Settings, role: str) -> Settings:
    """``settings`` connected to the local cluster as ``role`` (``admin`` or one of the roles):
    its Kafka principal, and its Redis user when `up --cluster` made the Redis Cluster.

    Raises:
        EmbeddedStackError: the cluster was never started under this home.
    """
    cluster_dir = settings.home / "cluster"
    if not (cluster_dir / SECRETS_FILE).exists():
        raise EmbeddedStackError(f"no cluster under {cluster_dir} (run `local up --cluster`)")
    user = ADMIN if role == "admin" else principal(role)
    out = role_settings(settings, user, passwords(cluster_dir)[user])
    if (redis_cluster.cluster_dir(settings) / redis_cluster.SECRETS_FILE).exists():
        pw = redis_cluster.passwords(settings)[acl.user(role)]
        out = out.model_copy(update={"redis": redis_cluster.role_redis(settings, role, pw)})
    return out


def env_text(settings: Settings, user: str, password: str) -> str:
    """The environment a role runs with (``set -a; . file`` or ``env $(cat file)``)."""
    s = role_settings(settings, user, password).kafka
    return "\n".join(
        [
            f"# {user} on the local cluster (written by `streamscore local up --cluster`)",
            f"STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS={s.bootstrap_servers}",
            f"STREAMSCORE_KAFKA__SECURITY_PROTOCOL={s.security_protocol}",
            f"STREAMSCORE_KAFKA__SASL_MECHANISM={s.sasl_mechanism}",
            f"STREAMSCORE_KAFKA__SASL_USERNAME={user}",
            f"STREAMSCORE_KAFKA__SASL_PASSWORD={password}",
            f"STREAMSCORE_KAFKA__SSL_CA_LOCATION={s.ssl_ca_location}",
            "STREAMSCORE_KAFKA__CONTROL_REPLICATION_FACTOR=3",
            "",
        ]
    )


def write_env_files(settings: Settings, cluster_dir: Path, pw: dict[str, str]) -> dict[str, Path]:
    """One env file per role and one for the admin, owner-only; returns them by role."""
    out: dict[str, Path] = {}
    for role, user in [*((r, principal(r)) for r in ROLES), ("admin", ADMIN)]:
        path = cluster_dir / "env" / f"{role}.env"
        write_private(path, env_text(settings, user, pw[user]))
        out[role] = path
    return out


def prepare(settings: Settings, cluster_dir: Path) -> dict[int, list[str]]:
    """CA, node certificates, configuration and (first time only) formatted storage with every
    principal's SCRAM credential; returns each node's argv.

    Raises:
        EmbeddedStackError: Java or the jars are missing, or a format failed.
    """
    local = settings.local
    ok, why = apache_kafka.availability(local)
    if not ok:
        raise EmbeddedStackError(f"cannot run the Kafka cluster: {why}")
    ca = tls.ensure_ca(cluster_dir / "ca")
    pw = passwords(cluster_dir)
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    argvs: dict[int, list[str]] = {}
    formats: dict[int, subprocess.Popen[str]] = {}
    for node in NODES:
        node_dir = cluster_dir / f"node-{node}"
        node_dir.mkdir(parents=True, exist_ok=True)
        tls.issue_node_cert(cluster_dir / "ca", node_dir / "node.pem", BROKER)
        props = node_dir / "server.properties"
        props.write_text(render_node_properties(local, node, node_dir, ca), encoding="utf-8")
        log4j = node_dir / "log4j2.yaml"
        log4j.write_text(apache_kafka.LOG4J2_YAML, encoding="utf-8")
        jvm = apache_kafka.jvm_args(local, log4j, node_dir)
        argvs[node] = [*jvm, "kafka.Kafka", str(props)]
        if (node_dir / "data" / "meta.properties").exists():
            continue
        # The credentials go into the cluster's metadata at format time (KRaft has no other
        # way before a broker runs). The tool takes them only as arguments, so they reach it
        # through a Java launcher argument file (owner-only, removed once the format is
        # done), never on its argv, which ps shows every user of the machine.
        scram = [f"--add-scram={MECHANISM}=[name={u},password={p}]" for u, p in pw.items()]
        args = node_dir / FORMAT_ARGS
        tool = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
        write_private(args, argfile([*tool, f"--config={props}", *scram]))
        formats[node] = subprocess.Popen(  # noqa: S603 (argv built here, never from input)
            [*jvm, f"@{args}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    if formats and len(formats) != len(NODES):
        raise EmbeddedStackError(
            f"nodes {sorted(set(NODES) - set(formats))} have data and others not; "
            "run `streamscore local down --purge`"
        )
    for node, proc in formats.items():  # the three formats run side by side
        try:
            out, _ = proc.communicate(timeout=180)
        finally:
            (cluster_dir / f"node-{node}" / FORMAT_ARGS).unlink(missing_ok=True)
        if proc.returncode != 0:
            tail = out[-600:]
            for secret in pw.values():
                tail = tail.replace(secret, "***")
            raise EmbeddedStackError(f"kafka storage format of node {node} failed: {tail}")
    write_env_files(settings, cluster_dir, pw)
    return argvs


def apply_acls(admin: AdminClient, table: dict[str, tuple[Grant, ...]], timeout: float) -> int:
    """Create every grant as an ALLOW ACL (creating an existing one is a no-op); returns how
    many bindings were sent.

    Raises:
        EmbeddedStackError: the cluster refused or did not answer.
    """
    bindings = [
        AclBinding(
            _RESOURCE[g.resource],
            g.name,
            _PATTERN[g.pattern],
            f"User:{user}",
            "*",
            AclOperation[g.operation],
            AclPermissionType.ALLOW,
        )
        for user, grants_ in table.items()
        for g in grants_
    ]
    futures = admin.create_acls(bindings, request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise EmbeddedStackError(f"cannot create ACL {binding}: {exc}") from exc
    return len(bindings)


def admin_settings(settings: Settings) -> Settings:
    """``settings`` as the admin, with the password from ``secrets.json``.

    Raises:
        EmbeddedStackError: the cluster was never prepared here (no secrets file).
    """
    cluster_dir = settings.home / "cluster"
    if not (cluster_dir / SECRETS_FILE).exists():
        raise EmbeddedStackError(f"no cluster under {cluster_dir} (run `local up --cluster`)")
    return role_settings(settings, ADMIN, passwords(cluster_dir)[ADMIN])


def answers(settings: Settings, brokers: int, timeout: float) -> bool:
    """True when the cluster's metadata names at least ``brokers`` brokers."""
    conf = admin_config(settings) | {"socket.connection.setup.timeout.ms": 2000}
    try:
        meta = AdminClient(conf).list_topics(timeout=timeout)
    except Exception:  # noqa: BLE001 (any failure means "not answering"; KafkaException mostly)
        return False
    return len(meta.brokers) >= brokers
