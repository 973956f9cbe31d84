"""Schema ids without a registry: ``schemas/manifest.json``, committed beside the schemas.

The manifest mirrors what a Confluent Schema Registry would hold: every registered schema with its
global id and fingerprint, and per subject (``<topic>-value``) its versions. Old versions stay
in it, so a worker can still decode messages written with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from services.codec.compat import compatibility_problems
from services.codec.schemas import RecordSchema, fingerprint, full_name
from services.core.errors import ConfigError, UnknownSchemaIdError

MANIFEST_FILE = "manifest.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class SubjectVersion:
    """One version of one subject, as a registry would list it."""

    subject: str
    version: int
    id: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """Registered schemas by id, and subject versions in registration order."""

    schemas: dict[int, dict[str, Any]]
    subjects: tuple[SubjectVersion, ...]

    @classmethod
    def empty(cls) -> Manifest:
        return cls(schemas={}, subjects=())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and check a manifest file.

        Raises:
            ConfigError: missing, unreadable, or a fingerprint does not match its schema.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{path} not found: run `streamscore schemas register` to create it"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        if data.get("format") != FORMAT:
            raise ConfigError(f"{path}: unsupported manifest format {data.get('format')!r}")
        schemas = {int(s["id"]): s["schema"] for s in data["schemas"]}
        for entry in data["schemas"]:
            if fingerprint(entry["schema"]) != entry["fingerprint"]:
                raise ConfigError(f"{path}: schema id {entry['id']} does not match its fingerprint")
        subjects = tuple(
            SubjectVersion(s["subject"], int(s["version"]), int(s["id"]), s["fingerprint"])
            for s in data["subjects"]
        )
        for sv in subjects:
            if sv.id not in schemas:
                raise ConfigError(f"{path}: subject {sv.subject} names unknown schema id {sv.id}")
        return cls(schemas=schemas, subjects=subjects)

    def dump(self, path: Path) -> None:
        """Write the manifest deterministically (sorted, indented) so diffs stay readable."""
        data = {
            "format": FORMAT,
            "schemas": [
                {
                    "id": sid,
                    "record": full_name(src),
                    "fingerprint": fingerprint(src),
                    "schema": src,
                }
                for sid, src in sorted(self.schemas.items())
            ],
            "subjects": [
                {
                    "subject": s.subject,
                    "version": s.version,
                    "id": s.id,
                    "fingerprint": s.fingerprint,
                }
                for s in sorted(self.subjects, key=lambda s: (s.subject, s.version))
            ],
        }
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def compatibility_problems(
        self, subject: str, record: RecordSchema, compatibility: str
    ) -> list[str]:
        """What breaks if ``record`` becomes the next version of ``subject``."""
        latest = self.latest(subject)
        if latest is None or compatibility == "NONE":
            return []
        return compatibility_problems(record.source, self.schemas[latest.id], compatibility)

    def latest(self, subject: str) -> SubjectVersion | None:
        versions = [s for s in self.subjects if s.subject == subject]
        return max(versions, key=lambda s: s.version) if versions else None

    def find(self, subject: str, fp: str) -> SubjectVersion | None:
        return next(
            (s for s in self.subjects if s.subject == subject and s.fingerprint == fp), None
        )

    def register(
        self, subject: str, record: RecordSchema, compatibility: str = "NONE"
    ) -> tuple[Manifest, SubjectVersion, bool]:
        """Register ``record`` under ``subject``; idempotent like a registry.

        Returns:
            The new manifest, the subject version, and whether anything was added.

        Raises:
            ConfigError: the new version breaks ``compatibility`` with the latest one.
        """
        existing = self.find(subject, record.fingerprint)
        if existing is not None:
            return self, existing, False
        problems = self.compatibility_problems(subject, record, compatibility)
        if problems:
            raise ConfigError(
                f"{record.full_name} is not {compatibility} compatible with the latest version of "
                f"{subject}: " + "; ".join(problems)
            )
        schema_id = next(
            (sid for sid, src in self.schemas.items() if fingerprint(src) == record.fingerprint),
            max(self.schemas, default=0) + 1,
        )
        latest = self.latest(subject)
        version = SubjectVersion(
            subject, (latest.version + 1) if latest else 1, schema_id, record.fingerprint
        )
        schemas = {**self.schemas, schema_id: record.source}
        return replace(self, schemas=schemas, subjects=(*self.subjects, version)), version, True


class ManifestSchemaIds:
    """``SchemaIds`` backed by the committed manifest."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest

    @classmethod
    def from_dir(cls, schemas_dir: Path) -> ManifestSchemaIds:
        return cls(Manifest.load(schemas_dir / MANIFEST_FILE))

    def id_for(self, subject: str, record: RecordSchema) -> int:
        found = self._manifest.find(subject, record.fingerprint)
        if found is None:
            raise ConfigError(
                f"schema {record.full_name} ({record.fingerprint[:19]}) is not registered under "
                f"subject {subject} in the manifest: run `streamscore schemas register`"
            )
        return found.id

    def writer_source(self, schema_id: int) -> dict[str, Any]:
        try:
            return self._manifest.schemas[schema_id]
        except KeyError:
            raise UnknownSchemaIdError(f"schema id {schema_id} is not in the manifest") from None
