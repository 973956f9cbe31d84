"""The manifest behaves like a registry: idempotent registration, versions, stable global ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.codec.manifest import Manifest
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas, parse_record
from services.core.errors import ConfigError

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)


def test_registration_is_idempotent_and_versions_grow(tmp_path: Path) -> None:
    m, v1, added = Manifest.empty().register("s-value", SCHEMAS["Label"])
    assert (v1.version, v1.id, added) == (1, 1, True)
    m2, again, added2 = m.register("s-value", SCHEMAS["Label"])
    assert (again, added2, m2) == (v1, False, m)
    evolved = dict(SCHEMAS["Label"].source)
    evolved["fields"] = [*evolved["fields"], {"name": "x", "type": "int", "default": 0}]
    m3, v2, _ = m2.register("s-value", parse_record(evolved, tmp_path / "Label.avsc"))
    assert (v2.version, v2.id) == (2, 2)
    assert m3.latest("s-value") == v2
    assert m3.schemas[1] == SCHEMAS["Label"].source  # old versions stay decodable


def test_same_schema_under_two_subjects_shares_its_id() -> None:
    m, a, _ = Manifest.empty().register("a-value", SCHEMAS["Label"])
    _, b, _ = m.register("b-value", SCHEMAS["Label"])
    assert (a.id, b.id, b.version) == (1, 1, 1)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    m, _, _ = Manifest.empty().register("a-value", SCHEMAS["Label"])
    path = tmp_path / "manifest.json"
    m.dump(path)
    assert Manifest.load(path) == m


def test_tampered_schema_is_refused(tmp_path: Path) -> None:
    m, _, _ = Manifest.empty().register("a-value", SCHEMAS["Label"])
    path = tmp_path / "manifest.json"
    m.dump(path)
    data = json.loads(path.read_text())
    data["schemas"][0]["schema"]["fields"][0]["type"] = "bytes"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="fingerprint"):
        Manifest.load(path)


def test_missing_manifest_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schemas register"):
        Manifest.load(tmp_path / "manifest.json")
