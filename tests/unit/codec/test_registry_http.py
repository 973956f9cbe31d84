"""The Schema Registry adapter over HTTP, through confluent-kafka's client, against the compose
stack's stand-in (deploy/registry/server.py): register, look up, get by id, compatibility and
basic auth. No real Confluent Schema Registry can be installed here (it is not on PyPI or Maven
Central); this pins the wire-level behaviour our code relies on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.codec.avro import AvroCodec
from services.codec.registry import RegistrySchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas, parse_record
from services.core.errors import ConfigError, SchemaRegistryUnavailable, UnknownSchemaIdError
from services.core.settings import SchemaRegistrySettings
from tests.unit.codec.standin import load_standin

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Callable[..., RegistrySchemaIds]]:
    """Adapters to one stand-in (level FULL, basic auth on); their clients closed after."""
    server = load_standin().make_server(
        tmp_path / "state.json", compatibility="FULL", user_info="streamscore:s3cret"
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    made: list[RegistrySchemaIds] = []

    def _connect(password: str = "s3cret") -> RegistrySchemaIds:  # noqa: S107 (a test's)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        settings = SchemaRegistrySettings(url=url, username="streamscore", password=password)
        made.append(RegistrySchemaIds.from_settings(settings))
        return made[-1]

    yield _connect
    for ids in made:  # keep-alive connections, else a ResourceWarning when collected
        ids._client.close()  # the adapter never closes its client: in a service it lives on
    server.shutdown()
    server.server_close()


def test_register_lookup_and_get_by_id(connect: Callable[..., RegistrySchemaIds]) -> None:
    ids = connect()
    interaction, label = SCHEMAS["Interaction"], SCHEMAS["Label"]
    with pytest.raises(ConfigError, match="schemas register"):
        ids.id_for("feed.interactions.v1-value", interaction)
    assert ids.compatible("feed.interactions.v1-value", interaction) is True  # no subject yet
    sid = ids.register("feed.interactions.v1-value", interaction)
    assert ids.register("feed.interactions.v1-value", interaction) == sid  # idempotent
    assert ids.register("feed.labels.v1-value", label) != sid
    fresh = connect()  # no client cache: every answer comes from the server
    assert fresh.id_for("feed.interactions.v1-value", interaction) == sid
    assert fresh.writer_source(sid) == interaction.source
    with pytest.raises(UnknownSchemaIdError):
        fresh.writer_source(sid + 100)
    assert fresh.compatible("feed.interactions.v1-value", interaction) is True


def test_the_registrys_level_refuses_an_incompatible_schema(
    connect: Callable[..., RegistrySchemaIds],
) -> None:
    ids = connect()
    interaction = SCHEMAS["Interaction"]
    ids.register("feed.interactions.v1-value", interaction)
    extra = {"name": "extra", "type": "long"}  # no default: old data cannot be read (FULL)
    source = interaction.source | {"fields": [*interaction.source["fields"], extra]}
    changed = parse_record(source, interaction.path)
    assert ids.compatible("feed.interactions.v1-value", changed) is False
    with pytest.raises(ConfigError, match="incompatible"):
        ids.register("feed.interactions.v1-value", changed)


def test_wrong_credentials_are_not_a_missing_schema(
    connect: Callable[..., RegistrySchemaIds],
) -> None:
    ids = connect(password="wrong")  # noqa: S106 (a test's)
    with pytest.raises(SchemaRegistryUnavailable, match="Unauthorized"):
        ids.id_for("feed.interactions.v1-value", SCHEMAS["Interaction"])


def test_unreachable_registry_is_transient() -> None:
    ids = RegistrySchemaIds.from_settings(SchemaRegistrySettings(url="http://127.0.0.1:9"))
    with pytest.raises(SchemaRegistryUnavailable):
        ids.writer_source(1)


def test_a_codec_closes_the_id_source_it_made_and_only_that(
    connect: Callable[..., RegistrySchemaIds],
) -> None:
    closed: list[str] = []

    class Ids:
        def id_for(self, subject: str, record: object) -> int:
            return 1

        def writer_source(self, schema_id: int) -> dict[str, object]:
            return {}

        def close(self) -> None:
            closed.append("closed")

    record = SCHEMAS["Interaction"]
    AvroCodec(record, Ids(), "s-value").close()  # shared (the worker's): its owner closes it
    assert closed == []
    AvroCodec(record, Ids(), "s-value", owns_ids=True).close()
    assert closed == ["closed"]
    ids = connect()
    ids.close()  # the registry adapter closes its HTTP client
    ids.close()  # twice is harmless
