"""Build codecs from settings: the schema directory, the id source, one codec per topic."""

from __future__ import annotations

from pathlib import Path

from services.codec.avro import AvroCodec
from services.codec.ids import SchemaIds
from services.codec.manifest import ManifestSchemaIds
from services.codec.registry import RegistrySchemaIds
from services.codec.schemas import RecordSchema, load_schemas
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.kafka.topics import TopicSpec


def schemas_dir(settings: Settings) -> Path:
    """The domain folder: its schemas, examples, rules, feature spec and manifest."""
    return settings.domain_dir


def schema_ids(settings: Settings) -> SchemaIds:
    """The Schema Registry when a URL is configured, else the committed manifest."""
    if settings.schema_registry.url:
        return RegistrySchemaIds.from_settings(settings.schema_registry)
    return ManifestSchemaIds.from_dir(schemas_dir(settings))


def codec_for(
    settings: Settings,
    topic: TopicSpec,
    schemas: dict[str, RecordSchema] | None = None,
    ids: SchemaIds | None = None,
) -> AvroCodec:
    """The codec of ``topic``'s values. Without ``ids``, the codec makes its own id source and
    ``close()`` releases it.

    Raises:
        ConfigError: the topic's record has no schema, or it is not registered.
    """
    schemas = schemas if schemas is not None else load_schemas(schemas_dir(settings))
    record = schemas.get(topic.value_record)
    if record is None:
        raise ConfigError(f"topic {topic.name}: no schema {topic.value_record}.avsc")
    return AvroCodec(
        record,
        ids if ids is not None else schema_ids(settings),
        topic.subject,
        max_message_bytes=settings.batch.max_message_bytes,
        owns_ids=ids is None,
    )
