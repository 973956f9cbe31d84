"""Schema evolution: compatibility rules, and v1/v2 readers decoding each other's messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from services.codec.avro import AvroCodec
from services.codec.compat import backward_problems, compatibility_problems
from services.codec.manifest import Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas, parse_record
from services.core.errors import ConfigError
from tests.factories import interaction

V1 = load_schemas(DEFAULT_SCHEMAS_DIR)["Interaction"]
SUBJECT = "feed.interactions.v1-value"


def evolve(change: Any) -> dict[str, Any]:
    source = copy.deepcopy(V1.source)
    change(source)
    return source


def field(source: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in source["fields"] if f["name"] == name)


ADD_OPTIONAL = evolve(
    lambda s: s["fields"].append(
        {"name": "experiment", "type": ["null", "string"], "default": None}
    )
)
ADD_REQUIRED = evolve(lambda s: s["fields"].append({"name": "experiment", "type": "string"}))
REMOVE_NO_DEFAULT = evolve(lambda s: s["fields"].remove(field(s, "country")))
REMOVE_WITH_DEFAULT = evolve(lambda s: s["fields"].remove(field(s, "is_sponsored")))
WIDEN = evolve(lambda s: field(s, "position").update(type="long"))
NARROW_TYPE = evolve(lambda s: field(s, "country").update(type="int"))
DROP_ENUM_SYMBOL = evolve(
    lambda s: (
        field(s, "device")["type"]["symbols"].remove("WEB"),
        field(s, "device")["type"].pop("default"),
    )
)


@pytest.mark.parametrize(
    ("new", "level", "ok"),
    [
        (ADD_OPTIONAL, "BACKWARD", True),
        (ADD_OPTIONAL, "FULL", True),
        (ADD_REQUIRED, "BACKWARD", False),
        (REMOVE_NO_DEFAULT, "BACKWARD", True),  # new readers simply ignore it
        (REMOVE_NO_DEFAULT, "FULL", False),  # old readers would miss it
        (REMOVE_WITH_DEFAULT, "FULL", True),
        (WIDEN, "BACKWARD", True),  # int data read as long
        (WIDEN, "FULL", False),  # long data cannot be read as int
        (NARROW_TYPE, "BACKWARD", False),
        (DROP_ENUM_SYMBOL, "BACKWARD", False),
        (NARROW_TYPE, "NONE", True),
    ],
    ids=lambda v: v if isinstance(v, str | bool) else "",
)
def test_compatibility_levels(new: dict[str, Any], level: str, ok: bool) -> None:
    assert (compatibility_problems(new, V1.source, level) == []) is ok


def test_problems_name_the_field() -> None:
    assert backward_problems(NARROW_TYPE, V1.source) == [
        "Interaction.country: string cannot be read as int"
    ]
    assert backward_problems(ADD_REQUIRED, V1.source) == [
        "Interaction.experiment: new field without a default"
    ]


def test_every_committed_schema_is_compatible_with_itself() -> None:
    for record in load_schemas(DEFAULT_SCHEMAS_DIR).values():
        assert compatibility_problems(record.source, record.source, "FULL") == []


def test_manifest_refuses_an_incompatible_version(tmp_path: Path) -> None:
    manifest, _, _ = Manifest.empty().register(SUBJECT, V1)
    with pytest.raises(ConfigError, match="country"):
        manifest.register(SUBJECT, parse_record(NARROW_TYPE, tmp_path / "x"), "BACKWARD")


def test_v1_and_v2_readers_decode_each_others_messages(tmp_path: Path) -> None:
    v2 = parse_record(ADD_OPTIONAL, tmp_path / "Interaction.avsc")
    manifest, sv1, _ = Manifest.empty().register(SUBJECT, V1)
    manifest, sv2, _ = manifest.register(SUBJECT, v2, "FULL")
    assert (sv1.version, sv2.version) == (1, 2) and sv1.id != sv2.id
    ids = ManifestSchemaIds(manifest)
    reader_v1 = AvroCodec(V1, ids, SUBJECT)
    reader_v2 = AvroCodec(v2, ids, SUBJECT)
    event = interaction()
    # A v2 producer's message, read by a worker still on v1: the new field is dropped.
    assert reader_v1.decode_one(reader_v2.encode_one(event | {"experiment": "b"})) == event
    # A v1 producer's message, read by a worker on v2: the new field takes its default.
    assert reader_v2.decode_one(reader_v1.encode_one(event)) == event | {"experiment": None}
