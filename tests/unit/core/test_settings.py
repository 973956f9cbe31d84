"""Settings: env prefix and nesting, precedence (flag > env > default), secrets never shown."""

from __future__ import annotations

import os
from unittest import mock

import pydantic
import pytest

from services.core.errors import ConfigError
from services.core.settings import Settings, masked
from streams.cli import build_settings, main


def test_defaults_point_at_the_embedded_stack_off_the_standard_ports() -> None:
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.redis_url == "redis://127.0.0.1:16379/0"
    assert (s.external_kafka, s.external_redis) == (False, False)
    assert s.home.is_absolute() and s.home.name == ".streamscore"


def test_nested_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("STREAMSCORE_BATCH__MAX_MESSAGES", "250")
    monkeypatch.setenv("STREAMSCORE_HOME", "/tmp/ss-home")
    s = Settings()
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.external_kafka is True
    assert s.batch.max_messages == 250
    assert str(s.home) == "/tmp/ss-home"


def test_precedence_flag_over_env_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_settings().kafka.bootstrap_servers is None  # default
    monkeypatch.setenv("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("STREAMSCORE_KAFKA__CLIENT_ID", "env-client")
    assert build_settings().kafka.bootstrap_servers == "from-env:9092"  # env
    s = build_settings(kafka__bootstrap_servers="from-flag:9092")
    assert s.kafka.bootstrap_servers == "from-flag:9092"  # flag wins
    assert s.kafka.client_id == "env-client"  # the rest of the group still comes from env


def test_schema_registry_url_alias_and_canonical_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_SCHEMA_REGISTRY_URL", "http://alias:8081")
    assert Settings().schema_registry.url == "http://alias:8081"
    monkeypatch.setenv("STREAMSCORE_SCHEMA_REGISTRY__URL", "http://canonical:8081")
    assert Settings().schema_registry.url == "http://canonical:8081"


def test_secrets_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_PASSWORD", "kafka-secret-123")
    monkeypatch.setenv("STREAMSCORE_REDIS__PASSWORD", "redis-secret-456")
    monkeypatch.setenv("STREAMSCORE_SCHEMA_REGISTRY__PASSWORD", "sr-secret-789")
    s = Settings()
    shown = repr(s) + str(masked(s))
    for secret in ("kafka-secret-123", "redis-secret-456", "sr-secret-789"):
        assert secret not in shown
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "kafka-secret-123"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.batch.max_messages = 5  # type: ignore[misc]  # the point is that it is refused


def test_invalid_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_BATCH__MAX_MESSAGES", "lots")
    with pytest.raises(ConfigError, match="STREAMSCORE_BATCH__MAX_MESSAGES"):
        build_settings()


def test_cli_exits_2_on_bad_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMSCORE_LOCAL__REDIS_PORT", "99999")
    with pytest.raises(SystemExit) as exc:
        main(["topics"])
    assert exc.value.code == 2
    assert "STREAMSCORE_LOCAL__REDIS_PORT" in capsys.readouterr().err


def test_to_env_round_trips_list_settings() -> None:
    from services.core.settings import to_env

    s = Settings(drift={"features": ("position",)})
    env = to_env(s)
    assert env["STREAMSCORE_DRIFT__FEATURES"] == '["position"]'
    with mock.patch.dict(os.environ, env):
        assert Settings().drift.features == ("position",)
