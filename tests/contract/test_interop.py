"""Byte compatibility with confluent-kafka's own Avro serde, for every schema and example.

A MockSchemaRegistryClient is loaded with the manifest's schemas in id order, so it holds the
same ids as the manifest; then confluent's AvroSerializer output decodes with our codec, and our
codec's output decodes with confluent's AvroDeserializer.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from services.codec.avro import AvroCodec
from services.codec.examples import load_example
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.settings import TopicSettings
from streams.topics import by_record

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
MANIFEST = Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE)
TOPICS = {r: by_record(TopicSettings(), r) for r in SCHEMAS}  # the main topic of each record
EXAMPLES = sorted((DEFAULT_SCHEMAS_DIR / "examples").glob("*/*.json"))


@pytest.fixture(scope="module")
def registry() -> SchemaRegistryClient:
    client = SchemaRegistryClient.new_client({"url": "mock://streamscore-interop"})
    registered: set[int] = set()
    for version in sorted(MANIFEST.subjects, key=lambda s: s.id):
        if version.id in registered:
            # A second subject with the same schema (the shadow topic): a real registry gives it
            # the same id, confluent's mock a new one; the id our bytes carry is the first.
            continue
        schema = Schema(json.dumps(MANIFEST.schemas[version.id]), "AVRO")
        assert client.register_schema(version.subject, schema) == version.id
        registered.add(version.id)
    return client


def _epoch_ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _epoch_ms(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_epoch_ms(v) for v in value]
    return value


def _setup(path: Path) -> tuple[AvroCodec, dict[str, Any], SerializationContext, str]:
    record = SCHEMAS[path.parent.name]
    topic = TOPICS[record.name]
    codec = AvroCodec(record, ManifestSchemaIds(MANIFEST), topic.subject)
    ctx = SerializationContext(topic.name, MessageField.VALUE)
    return codec, load_example(path, record.source), ctx, json.dumps(record.source)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_confluent_serializer_bytes_decode_with_our_codec(
    path: Path, registry: SchemaRegistryClient
) -> None:
    codec, example, ctx, schema_str = _setup(path)
    serializer = AvroSerializer(
        registry, schema_str, conf={"auto.register.schemas": False, "use.latest.version": False}
    )
    data = serializer(example, ctx)
    assert data is not None and data[:5] == b"\x00" + codec.schema_id.to_bytes(4, "big")
    assert codec.decode_one(data) == example


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_our_bytes_decode_with_confluent_deserializer(
    path: Path, registry: SchemaRegistryClient
) -> None:
    codec, example, ctx, _ = _setup(path)
    decoded = AvroDeserializer(registry)(codec.encode_one(example), ctx)
    assert _epoch_ms(decoded) == example
