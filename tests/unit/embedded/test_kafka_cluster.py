"""The secured cluster's pure parts: the local CA and node certificates, each node's
configuration, the principals' passwords and env files, and the ACL table."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from services.core.errors import EmbeddedStackError
from services.core.settings import LocalSettings, Settings
from services.embedded import kafka_cluster, tls
from services.kafka.acls import (
    ADMIN,
    CONTROL_APP,
    LOG_READER_PREFIX,
    MODEL_WATCH_PREFIX,
    REPLAY_PREFIX,
    SANDBOX_PREFIX,
    Grant,
    grants,
)
from services.training import log_reader
from streams.control.app import GROUP
from streams.replay import group_of
from streams.topics import SANDBOX_PREFIX as TABLE_SANDBOX


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_is_made_once_and_kept(tmp_path: Path) -> None:
    ca = tls.ensure_ca(tmp_path / "ca")
    first = ca.read_bytes()
    assert tls.ensure_ca(tmp_path / "ca").read_bytes() == first  # a restart keeps the CA
    assert _mode(tmp_path / "ca" / tls.CA_KEY) == 0o600


def test_ca_without_its_key_is_refused(tmp_path: Path) -> None:
    tls.ensure_ca(tmp_path / "ca")
    (tmp_path / "ca" / tls.CA_KEY).unlink()
    with pytest.raises(EmbeddedStackError, match="without the other"):
        tls.ensure_ca(tmp_path / "ca")


def test_node_certificate_is_signed_by_the_ca_and_names_loopback(tmp_path: Path) -> None:
    ca_path = tls.ensure_ca(tmp_path / "ca")
    pem = tls.issue_node_cert(tmp_path / "ca", tmp_path / "node.pem", "streamscore-broker")
    assert _mode(pem) == 0o600
    text = pem.read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in text  # unencrypted PKCS#8, as Kafka's PEM store reads
    node, chained_ca = x509.load_pem_x509_certificates(text)
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    assert chained_ca == ca
    node.verify_directly_issued_by(ca)
    cn = node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "streamscore-broker"
    sans = node.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_node_properties_are_secured_and_replicated() -> None:
    props = kafka_cluster.render_node_properties(
        LocalSettings(cluster_port=20000), 2, Path("/n2"), Path("/ca.pem")
    )
    lines = dict(ln.split("=", 1) for ln in props.splitlines() if "=" in ln and ln[0] != "#")
    assert lines["node.id"] == "2"
    assert lines["controller.quorum.voters"] == (
        "1@127.0.0.1:20020,2@127.0.0.1:20021,3@127.0.0.1:20022"
    )
    assert lines["listeners"] == (
        "CLIENT://127.0.0.1:20001,INTERNAL://127.0.0.1:20011,CONTROLLER://127.0.0.1:20021"
    )
    assert lines["listener.security.protocol.map"] == (
        "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    )
    assert lines["allow.everyone.if.no.acl.found"] == "false"
    assert lines["super.users"] == "User:streamscore-admin;User:streamscore-broker"
    assert lines["default.replication.factor"] == "3"
    assert lines["min.insync.replicas"] == "2"
    assert lines["listener.name.controller.ssl.client.auth"] == "required"
    assert "PLAINTEXT" not in props


def test_passwords_are_made_once_owner_only_and_env_files_carry_them(tmp_path: Path) -> None:
    pw = kafka_cluster.passwords(tmp_path)
    assert kafka_cluster.passwords(tmp_path) == pw
    assert _mode(tmp_path / kafka_cluster.SECRETS_FILE) == 0o600
    assert len(set(pw.values())) == len(pw) == 6
    settings = Settings(home=tmp_path)
    files = kafka_cluster.write_env_files(settings, tmp_path, pw)
    worker = files["worker"].read_text()
    assert _mode(files["worker"]) == 0o600
    assert "STREAMSCORE_KAFKA__SASL_USERNAME=streamscore-worker\n" in worker
    assert f"STREAMSCORE_KAFKA__SASL_PASSWORD={pw['streamscore-worker']}\n" in worker
    assert pw[ADMIN] not in worker
    assert "STREAMSCORE_KAFKA__SECURITY_PROTOCOL=SASL_SSL\n" in worker


def test_role_settings_never_show_the_password(tmp_path: Path) -> None:
    s = kafka_cluster.role_settings(Settings(home=tmp_path), "streamscore-api", "s3cr3t-pw")
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(s) and "s3cr3t-pw" not in str(s.model_dump())


def test_a_secrets_file_missing_a_principal_is_refused(tmp_path: Path) -> None:
    (tmp_path / kafka_cluster.SECRETS_FILE).write_text('{"streamscore-admin": "x"}')
    with pytest.raises(EmbeddedStackError, match="no password for streamscore-worker"):
        kafka_cluster.passwords(tmp_path)


def test_acl_table_least_privilege() -> None:
    s = Settings()
    t = s.topics
    g = grants(s)
    worker, api, replay = g["streamscore-worker"], g["streamscore-api"], g["streamscore-replay"]
    assert Grant("topic", t.predictions, "WRITE") in worker
    assert Grant("topic", t.labels, "WRITE") not in worker
    assert not any(x.name == t.labels for x in worker)
    assert Grant("group", s.worker.scoring_group, "READ") in worker
    # The API only publishes: no READ anywhere, no group.
    assert {x.operation for x in api} == {"WRITE", "DESCRIBE"}
    assert not any(x.resource == "group" for x in api)
    # Every topic the API writes is granted: a refused feature log would vanish (best effort).
    for topic in (t.events, t.shadow_predictions, t.feature_log):
        assert Grant("topic", topic, "WRITE") in api, topic
    # Replay writes only under sandbox., in transactions under its own prefix.
    writes = {(x.name, x.pattern) for x in replay if x.operation == "WRITE"}
    assert writes == {(SANDBOX_PREFIX, "prefixed"), (REPLAY_PREFIX, "prefixed")}
    assert Grant("transactional_id", REPLAY_PREFIX, "WRITE", "prefixed") in replay
    # The control plane reads what its retrainer reads (the window's events, labels and the
    # feature log) in its own groups and the log reader's, and writes no production topic.
    control = g["streamscore-control"]
    for topic in (t.events, t.labels, t.feature_log):
        assert Grant("topic", topic, "READ") in control, topic
    assert not any(x.name == t.predictions for x in control)
    control_writes = {x.name for x in control if x.operation == "WRITE"}
    assert control_writes == {t.retrain_requests, t.model_events, CONTROL_APP}
    control_groups = {(x.name, x.pattern) for x in control if x.resource == "group"}
    assert control_groups == {
        (CONTROL_APP, "prefixed"),
        (LOG_READER_PREFIX, "prefixed"),
        (MODEL_WATCH_PREFIX, "prefixed"),
    }
    # No role but the admin may create table topics; nobody but the admin is super.
    for user, items in g.items():
        creates = {x.name for x in items if x.operation == "CREATE"}
        assert creates <= {SANDBOX_PREFIX, CONTROL_APP}, user
    assert ADMIN not in g


def test_fixed_names_agree_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GROUP == CONTROL_APP
    assert group_of("x").startswith(REPLAY_PREFIX)
    assert TABLE_SANDBOX == SANDBOX_PREFIX
    # The feature-log reader's consumer group is under the prefix the control plane may read.
    seen: list[str] = []

    def consumer(conf: dict[str, object]) -> None:
        seen.append(str(conf["group.id"]))
        raise RuntimeError("stop: the group is all this test wants")

    monkeypatch.setattr(log_reader, "Consumer", consumer)
    with pytest.raises(RuntimeError, match="stop"):
        next(log_reader._messages(Settings(), "t.v1", 0, 1, 1.0))
    assert len(seen) == 1 and seen[0].startswith(LOG_READER_PREFIX)


class _Format:
    """``subprocess.Popen`` as the storage format sees it: records its argv, reads its argument
    file while it runs (as the Java launcher would), succeeds."""

    spawned: list[list[str]] = []
    argfiles: list[tuple[str, int]] = []  # (text, mode)

    def __init__(self, argv: list[str], **_: object) -> None:
        self.spawned.append(list(argv))
        self._argv = argv
        self.returncode = 0

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        files = [Path(a[1:]) for a in self._argv if a.startswith("@")]
        for f in files:
            self.argfiles.append((f.read_text(encoding="utf-8"), _mode(f)))
        return "Formatting metadata directory", ""


def test_no_spawned_argv_holds_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SCRAM passwords reach the storage format through an owner-only argument file that
    is gone once the format is done; no argv (the formats', the nodes') holds one (ps shows
    every process's argv to every user of the machine)."""
    monkeypatch.setattr(kafka_cluster.apache_kafka, "availability", lambda local: (True, ""))
    monkeypatch.setattr(kafka_cluster.subprocess, "Popen", _Format)
    _Format.spawned, _Format.argfiles = [], []
    settings = Settings(home=tmp_path)
    cluster_dir = tmp_path / "cluster"
    argvs = kafka_cluster.prepare(settings, cluster_dir)
    secrets = list(kafka_cluster.passwords(cluster_dir).values())
    assert len(_Format.spawned) == len(kafka_cluster.NODES) and len(secrets) >= 6
    for argv in [*_Format.spawned, *argvs.values()]:
        assert not any(s in a for s in secrets for a in argv), argv
    for text, mode in _Format.argfiles:  # the credentials are in the file, owner-only
        assert mode == 0o600 and all(s in text for s in secrets)
        assert text.startswith('"kafka.tools.StorageTool"\n"format"\n')
    assert list(cluster_dir.rglob(kafka_cluster.FORMAT_ARGS)) == []  # removed after the format
