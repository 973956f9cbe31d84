"""The seam between the codec and wherever schema ids live (manifest file or Schema Registry)."""

from __future__ import annotations

from typing import Any, Protocol

from services.codec.schemas import RecordSchema


class SchemaIds(Protocol):
    """Resolves the id to write a schema under, and the writer schema behind an id.

    Implementations: ``ManifestSchemaIds`` (the committed manifest) and ``RegistrySchemaIds``
    (a Confluent Schema Registry). Both pass ``tests/contract/test_schema_ids.py``.
    """

    def id_for(self, subject: str, record: RecordSchema) -> int:
        """The registered id of ``record`` under ``subject``.

        Raises:
            ConfigError: the schema is not registered under that subject.
            SchemaRegistryUnavailable: the registry did not answer.
        """
        ...

    def writer_source(self, schema_id: int) -> dict[str, Any]:
        """The JSON of the schema registered under ``schema_id``.

        Raises:
            UnknownSchemaIdError: no schema has that id.
            SchemaRegistryUnavailable: the registry did not answer.
        """
        ...
