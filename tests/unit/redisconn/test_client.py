"""The Redis settings and client factory: deployments, TLS, ACL users, one-line errors."""

from __future__ import annotations

import ssl

import pydantic
import pytest
import redis

from services.core.errors import ConfigError, FeatureStoreUnavailable
from services.core.settings import RedisSettings, Settings, masked
from services.redisconn.client import connect, describe, reason, tls_options
from streams.cli import build_settings


def test_a_password_inside_the_url_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_REDIS__URL", "redis://worker:hunter2@h:6379/0")
    with pytest.raises(ConfigError) as err:
        build_settings()
    assert "hunter2" not in str(err.value)
    assert "STREAMSCORE_REDIS__URL" in str(err.value)
    assert "STREAMSCORE_REDIS__PASSWORD" in str(err.value)


def test_sentinel_mode_needs_sentinels_and_a_cert_needs_its_key() -> None:
    with pytest.raises(pydantic.ValidationError, match="SENTINELS"):
        RedisSettings(mode="sentinel")
    with pytest.raises(pydantic.ValidationError, match="host:port"):
        RedisSettings(mode="sentinel", sentinels="nohost")
    with pytest.raises(pydantic.ValidationError, match="tls_key_file"):
        RedisSettings(tls_cert_file="/c.pem")


def test_tls_is_on_for_rediss_or_when_asked() -> None:
    assert RedisSettings(url="rediss://h:1/0").use_tls
    assert RedisSettings(tls=True).use_tls
    assert not RedisSettings(url="redis://h:1/0").use_tls
    opts = tls_options(RedisSettings(tls=True, tls_ca_file="/ca.pem", tls_check_hostname=False))
    assert opts["ssl_ca_certs"] == "/ca.pem" and opts["ssl_check_hostname"] is False


def test_secrets_of_every_redis_deployment_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_REDIS__PASSWORD", "user-secret-1")
    monkeypatch.setenv("STREAMSCORE_REDIS__SENTINEL_PASSWORD", "sentinel-secret-2")
    monkeypatch.setenv("STREAMSCORE_REDIS__USERNAME", "streamscore-worker")
    s = Settings()
    shown = repr(s) + str(masked(s))
    assert "user-secret-1" not in shown and "sentinel-secret-2" not in shown
    assert "streamscore-worker" in shown  # a user name is not a secret


def test_each_mode_builds_its_client() -> None:
    assert type(connect(RedisSettings(), "redis://127.0.0.1:1/0")) is redis.Redis
    sentinel = connect(RedisSettings(mode="sentinel", sentinels="127.0.0.1:1"), "redis://x/0")
    assert type(sentinel) is redis.Redis  # the primary, found through the sentinels per call
    tls_client = connect(RedisSettings(tls=True), "redis://127.0.0.1:1/0")
    assert isinstance(tls_client, redis.Redis)
    kwargs = tls_client.connection_pool.connection_kwargs
    assert tls_client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_cert_reqs"] == "required"


def test_a_cluster_that_cannot_be_reached_is_one_line() -> None:
    cfg = RedisSettings(mode="cluster", username="w", password="pw-never-shown")
    with pytest.raises(FeatureStoreUnavailable) as err:
        connect(cfg, "redis://127.0.0.1:1/0", socket_timeout=0.2)
    assert "\n" not in str(err.value) and "pw-never-shown" not in str(err.value)
    assert str(err.value).startswith("redis at 127.0.0.1:1 unavailable")


def test_failures_are_described_in_one_line() -> None:
    cfg = RedisSettings(username="streamscore-worker", tls_ca_file="/wrong-ca.pem", tls=True)
    bad_ca = redis.ConnectionError("Error 1 connecting")
    bad_ca.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert describe(bad_ca, cfg, "h:1") == (
        "redis at h:1: TLS certificate not trusted "
        "(check STREAMSCORE_REDIS__TLS_CA_FILE=/wrong-ca.pem)"
    )
    wrong = redis.AuthenticationError("WRONGPASS invalid username-password pair")
    assert "refused user 'streamscore-worker'" in describe(wrong, cfg, "h:1")
    noperm = redis.exceptions.NoPermissionError("this user has no permissions to run 'hgetall'")
    assert describe(noperm, cfg, "h:1").startswith("redis at h:1: user 'streamscore-worker' lacks")


def test_a_pipeline_error_drops_the_command_and_its_arguments() -> None:
    exc = redis.ResponseError("Command # 1 (SET k \x00\x01 raw) of pipeline caused error: NOPERM")
    assert reason(exc) == "NOPERM"
