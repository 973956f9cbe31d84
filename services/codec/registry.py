"""Schema ids from a Confluent Schema Registry (a ``mock://`` URL gives confluent's mock)."""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from services.codec.compat import compatibility_problems
from services.codec.schemas import RecordSchema
from services.core.errors import ConfigError, SchemaRegistryUnavailable, UnknownSchemaIdError
from services.core.settings import SchemaRegistrySettings

if TYPE_CHECKING:  # annotations only: the client is imported when a registry is used
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient


def _client_module() -> ModuleType:
    """confluent-kafka's Schema Registry client, imported on first use: it brings an HTTP and
    an auth stack (about 0.15 s) that manifest mode and the SDK never need."""
    import confluent_kafka.schema_registry as sr

    return sr


# The client raises its HTTP library's errors (httpx or httpx2, whichever is installed) for
# transport failures; anything that is not a SchemaRegistryError is treated as "unreachable".

# A hostile producer can send random schema ids; remember misses so each costs one lookup per
# interval, not one per message.
_NEGATIVE_TTL_SECONDS = 30.0
_NEGATIVE_CACHE_MAX = 4096


class RegistrySchemaIds:
    """``SchemaIds`` backed by a Schema Registry; ids are immutable there, so hits are cached."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client
        self._ids: dict[tuple[str, str], int] = {}
        self._sources: dict[int, dict[str, Any]] = {}
        self._misses: dict[int, float] = {}

    @classmethod
    def from_settings(cls, settings: SchemaRegistrySettings) -> RegistrySchemaIds:
        if settings.url is None:
            raise ConfigError("schema_registry.url is not set")
        conf: dict[str, Any] = {"url": settings.url}
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else ""
            conf["basic.auth.user.info"] = f"{settings.username}:{password}"
        return cls(_client_module().SchemaRegistryClient.new_client(conf))

    def close(self) -> None:
        """Close the client's HTTP connections (kept alive between calls)."""
        self._client.close()

    def id_for(self, subject: str, record: RecordSchema) -> int:
        key = (subject, record.fingerprint)
        if key not in self._ids:
            try:
                found = self._client.lookup_schema(subject, _to_schema(record))
            except _client_module().SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    raise ConfigError(
                        f"schema {record.full_name} is not registered under subject {subject} "
                        "in the Schema Registry: run `streamscore schemas register`"
                    ) from exc
                raise SchemaRegistryUnavailable(f"schema registry lookup failed: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 (transport errors: httpx or httpx2, whichever the client uses)
                raise SchemaRegistryUnavailable(f"schema registry unreachable: {exc}") from exc
            if found.schema_id is None:
                raise SchemaRegistryUnavailable(f"registry returned no id for {subject}")
            self._ids[key] = int(found.schema_id)
        return self._ids[key]

    def writer_source(self, schema_id: int) -> dict[str, Any]:
        if schema_id in self._sources:
            return self._sources[schema_id]
        missed_at = self._misses.get(schema_id)
        if missed_at is not None and time.monotonic() - missed_at < _NEGATIVE_TTL_SECONDS:
            raise UnknownSchemaIdError(f"schema id {schema_id} is not in the schema registry")
        try:
            schema = self._client.get_schema(schema_id)
        except _client_module().SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                if len(self._misses) >= _NEGATIVE_CACHE_MAX:
                    self._misses.clear()
                self._misses[schema_id] = time.monotonic()
                raise UnknownSchemaIdError(
                    f"schema id {schema_id} is not in the schema registry"
                ) from exc
            raise SchemaRegistryUnavailable(f"schema registry get failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 (transport errors: httpx or httpx2, whichever the client uses)
            raise SchemaRegistryUnavailable(f"schema registry unreachable: {exc}") from exc
        if schema.schema_type not in (None, "AVRO"):
            raise UnknownSchemaIdError(f"schema id {schema_id} is {schema.schema_type}, not AVRO")
        if schema.schema_str is None:
            raise UnknownSchemaIdError(f"schema id {schema_id} has no schema text")
        source: dict[str, Any] = json.loads(schema.schema_str)
        self._sources[schema_id] = source
        return source

    def compatible(self, subject: str, record: RecordSchema, level: str = "BACKWARD") -> bool:
        """The registry's own verdict (its configured level) on ``record`` as the next version;
        True for a subject that does not exist yet. confluent's mock registry has no
        compatibility endpoint, so for it the same check runs locally at ``level``."""
        from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
            MockSchemaRegistryClient,
        )

        if isinstance(self._client, MockSchemaRegistryClient):
            try:
                latest = self._client.get_latest_version(subject)
            except _client_module().SchemaRegistryError:
                return True
            old = json.loads(latest.schema.schema_str or "{}")
            return not compatibility_problems(record.source, old, level)
        try:
            return bool(self._client.test_compatibility(subject, _to_schema(record)))
        except _client_module().SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return True
            raise SchemaRegistryUnavailable(
                f"schema registry compatibility check failed: {exc}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 (transport errors: httpx or httpx2)
            raise SchemaRegistryUnavailable(f"schema registry unreachable: {exc}") from exc

    def register(self, subject: str, record: RecordSchema) -> int:
        """Register ``record`` under ``subject`` (idempotent) and return its id."""
        try:
            return int(self._client.register_schema(subject, _to_schema(record)))
        except _client_module().SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise ConfigError(
                    f"the registry refused {record.full_name} under {subject} as incompatible: "
                    f"{exc}"
                ) from exc
            raise SchemaRegistryUnavailable(f"schema registry register failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 (transport errors: httpx or httpx2, whichever the client uses)
            raise SchemaRegistryUnavailable(f"schema registry unreachable: {exc}") from exc


def _to_schema(record: RecordSchema) -> Schema:
    schema: Schema = _client_module().Schema(json.dumps(record.source), "AVRO")
    return schema
