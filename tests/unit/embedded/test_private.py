"""Secrets the local clusters write are readable by their owner only, also when the file was
already there with a wider mode (a node's key rewritten at each start, an env file a person
copied in)."""

from __future__ import annotations

import stat
from pathlib import Path

from services.core.settings import Settings
from services.embedded import kafka_cluster, tls
from services.embedded.private import write_private
from services.embedded.redis_cluster import RedisClusterStack


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _readable_by_all(path: Path, text: str = "OLD=1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_a_new_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "key.pem"
    write_private(path, b"secret")
    assert _mode(path) == 0o600 and path.read_bytes() == b"secret"


def test_a_file_already_there_is_narrowed_and_replaced(tmp_path: Path) -> None:
    path = _readable_by_all(tmp_path / "secrets.json", "a longer text than the new one")
    write_private(path, '{"u": "p"}')
    assert _mode(path) == 0o600 and path.read_text() == '{"u": "p"}'


def test_the_clusters_rewrite_their_secrets_owner_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    kafka_env = _readable_by_all(tmp_path / "kafka" / "env" / "worker.env")
    kafka_cluster.write_env_files(settings, tmp_path / "kafka", kafka_cluster.passwords(tmp_path))
    redis_env = _readable_by_all(tmp_path / "env" / "api.env")
    RedisClusterStack(settings, tmp_path / "local").add_to_env_files(tmp_path / "env")
    tls.ensure_ca(tmp_path / "ca")
    node = _readable_by_all(tmp_path / "node" / "node.pem")
    tls.issue_node_cert(tmp_path / "ca", node, "redis-0")
    assert {p.name: _mode(p) for p in (kafka_env, redis_env, node)} == {
        "worker.env": 0o600,
        "api.env": 0o600,
        "node.pem": 0o600,
    }
