"""The ACL rules per role: a role's keys and commands, and nothing of another role's."""

from __future__ import annotations

import pytest

from services.redisconn import acl


def test_the_worker_reads_features_and_writes_only_predictions_and_its_buckets() -> None:
    r = acl.rules("worker", "ss:")
    assert "%R~ss:feat:*" in r and "~ss:pred:*" in r and "~ss:rl:stream:*" in r
    assert "apikey" not in r and "rl:api" not in r and "~ss:feat:*" not in r.replace("%R~", "")
    assert "-@all" in r and "+@all" not in r


def test_the_api_reads_its_keys_and_never_the_stream_buckets() -> None:
    r = acl.rules("api", "ss:")
    assert "%R~ss:apikey:*" in r and "~ss:rl:api:*" in r
    assert "rl:stream" not in r and "pred:" not in r


def test_only_admin_has_every_key() -> None:
    assert acl.rules("admin", "ss:") == "allkeys allchannels +@all"
    for role in acl.ROLES:
        assert "allkeys" not in acl.rules(role, "ss:")
    with pytest.raises(ValueError, match="unknown role"):
        acl.rules("root", "ss:")


def test_a_config_line_holds_the_hash_never_the_password() -> None:
    line = acl.config_line("u", "s3cret", "+ping")
    assert "s3cret" not in line and line.startswith("user u reset on #")
