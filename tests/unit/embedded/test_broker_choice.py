"""Which broker `local up` runs, and the Kafka configuration it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import EmbeddedStackError
from services.core.settings import Settings
from services.embedded.kafka import availability, jars_version, render_server_properties
from services.embedded.stack import resolve_broker


def _settings(tmp_path: Path, java: str, with_jars: bool) -> Settings:
    jars = tmp_path / "jars"
    jars.mkdir()
    if with_jars:
        (jars / "kafka_2.13-9.9.9.jar").write_bytes(b"")
        (jars / "VERSION").write_text("9.9.9\n")
    return Settings(local={"java_bin": java, "kafka_jars_dir": jars})  # type: ignore[arg-type]


def test_auto_prefers_kafka_when_java_and_jars_exist(tmp_path: Path) -> None:
    s = _settings(tmp_path, "sh", with_jars=True)  # any executable on PATH stands in for java
    assert jars_version(s.local.kafka_jars_dir) == "9.9.9"
    assert resolve_broker("auto", s) == ("kafka", "Apache Kafka 9.9.9")


def test_auto_falls_back_to_tansu_and_says_why(tmp_path: Path) -> None:
    s = _settings(tmp_path, "sh", with_jars=False)
    kind, why = resolve_broker("auto", s)
    assert kind == "tansu" and "make kafka" in why


def test_kafka_asked_for_but_impossible_is_an_error(tmp_path: Path) -> None:
    s = _settings(tmp_path, "no-such-java-binary", with_jars=True)
    assert availability(s.local)[0] is False
    with pytest.raises(EmbeddedStackError, match="Java"):
        resolve_broker("kafka", s)
    assert resolve_broker("tansu", s)[0] == "tansu"


def test_server_properties_single_node_kraft_on_loopback() -> None:
    props = dict(
        line.split("=", 1)
        for line in render_server_properties(29092, 29093, Path("/data")).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == "/data"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
