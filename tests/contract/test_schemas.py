"""The Avro contract: every schema parses, every example is valid and round-trips, the manifest
holds every topic's current schema, and a malformed example fails loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.codec.contract import check_example, check_examples
from services.codec.manifest import MANIFEST_FILE, Manifest
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.errors import ConfigError
from services.core.settings import TopicSettings
from streams.topics import topic_table

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
EXAMPLES = sorted((DEFAULT_SCHEMAS_DIR / "examples").glob("*/*.json"))


def test_one_record_per_file_named_after_it() -> None:
    files = sorted(p.stem for p in DEFAULT_SCHEMAS_DIR.glob("*.avsc"))
    assert files == sorted(SCHEMAS)
    assert sorted(SCHEMAS) == [
        "DeadLetter",
        "DriftSignal",
        "FeatureLog",
        "Interaction",
        "Label",
        "ModelEvent",
        "Prediction",
        "RetrainRequest",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_is_valid_and_round_trips(path: Path) -> None:
    result = check_example(SCHEMAS[path.parent.name], path)
    assert (result.ok, result.error) == (True, "")


def test_every_record_has_an_example() -> None:
    results = check_examples(SCHEMAS, DEFAULT_SCHEMAS_DIR / "examples")
    assert [r.error for r in results if not r.ok] == []
    assert {r.record for r in results} == set(SCHEMAS)


def test_manifest_holds_every_topics_current_schema() -> None:
    manifest = Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE)
    for topic in topic_table(TopicSettings()):
        found = manifest.find(topic.subject, SCHEMAS[topic.value_record].fingerprint)
        assert found is not None, f"{topic.subject}: run `streamscore schemas register`"


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda d: d.pop("event_id"), "event_id"),
        (lambda d: d.update(position="third"), "position"),
        (lambda d: d.update(position=2**40), "position"),
        (lambda d: d.update(device="PALM_PILOT"), "device"),
        (lambda d: d.update(is_video="yes"), "is_video"),
        (lambda d: d.update(unexpected_field=1), "unexpected_field"),
    ],
    ids=["missing", "wrong-type", "int-overflow", "unknown-enum", "bool-as-string", "extra-field"],
)
def test_a_malformed_example_fails_loudly(tmp_path: Path, mutation: object, expected: str) -> None:
    source = DEFAULT_SCHEMAS_DIR / "examples" / "Interaction" / "home_feed_ios.json"
    data = json.loads(source.read_text())
    mutation(data)  # type: ignore[operator]  # the lambdas above
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = check_example(SCHEMAS["Interaction"], bad)
    assert result.ok is False
    assert expected in result.error


def test_a_malformed_schema_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "Broken.avsc").write_text(
        '{"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "integer"}]}'
    )
    with pytest.raises(ConfigError, match="Broken.avsc"):
        load_schemas(tmp_path)
