"""One contract for every SchemaIds implementation: the manifest and a Schema Registry
(confluent's MockSchemaRegistryClient via a ``mock://`` URL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from services.codec.ids import SchemaIds
from services.codec.manifest import Manifest, ManifestSchemaIds
from services.codec.registry import RegistrySchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, fingerprint, load_schemas
from services.core.errors import ConfigError, UnknownSchemaIdError
from services.core.settings import SchemaRegistrySettings

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
SUBJECTS = {"Interaction": "feed.interactions.v1-value", "Label": "feed.labels.v1-value"}


def _manifest() -> SchemaIds:
    m = Manifest.empty()
    for record, subject in SUBJECTS.items():
        m, _, _ = m.register(subject, SCHEMAS[record])
    return ManifestSchemaIds(m)


def _registry() -> SchemaIds:
    ids = RegistrySchemaIds.from_settings(SchemaRegistrySettings(url=f"mock://{uuid.uuid4().hex}"))
    for record, subject in SUBJECTS.items():
        ids.register(subject, SCHEMAS[record])
    return ids


@pytest.fixture(params=[_manifest, _registry], ids=["manifest", "registry"])
def ids(request: pytest.FixtureRequest) -> SchemaIds:
    factory: Callable[[], SchemaIds] = request.param
    return factory()


def test_registered_schema_has_an_id_that_resolves_back_to_it(ids: SchemaIds) -> None:
    for record, subject in SUBJECTS.items():
        schema_id = ids.id_for(subject, SCHEMAS[record])
        assert fingerprint(ids.writer_source(schema_id)) == SCHEMAS[record].fingerprint


def test_distinct_schemas_have_distinct_ids(ids: SchemaIds) -> None:
    a = ids.id_for(SUBJECTS["Interaction"], SCHEMAS["Interaction"])
    b = ids.id_for(SUBJECTS["Label"], SCHEMAS["Label"])
    assert a != b


def test_unregistered_schema_is_a_config_error(ids: SchemaIds) -> None:
    with pytest.raises(ConfigError, match="schemas register"):
        ids.id_for("feed.predictions.v1-value", SCHEMAS["Prediction"])


def test_unknown_id_is_an_unknown_schema_id_error(ids: SchemaIds) -> None:
    with pytest.raises(UnknownSchemaIdError):
        ids.writer_source(424242)
    with pytest.raises(UnknownSchemaIdError):  # and again, from the negative cache
        ids.writer_source(424242)
