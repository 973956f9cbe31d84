"""`produce`'s framing without a broker: the key from a field, and `--unchecked` (rules skipped,
a value the schema refuses sent as its JSON text, which the worker refuses at decode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.codec.factory import codec_for, schemas_dir
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.validation.rules import RecordRules
from streams.cli import cli
from streams.commands.produce import frame_values
from streams.topics import topic_table

NOW = 1_763_798_400_000


@pytest.fixture
def settings() -> Settings:
    return Settings()


def _setup(s: Settings) -> tuple[Any, RecordRules]:
    spec = next(t for t in topic_table(s.topics) if t.name == s.topics.events)
    return codec_for(s, spec), RecordRules.load("Interaction", schemas_dir(s) / "rules")


def _event(**changes: Any) -> dict[str, Any]:
    example = Path(__file__).parents[3] / "schemas/examples/Interaction/home_feed_ios.json"
    value: dict[str, Any] = json.loads(example.read_text())
    return value | {"event_time": NOW} | changes


def test_key_field_takes_each_key_from_its_value(settings: Settings) -> None:
    codec, rules = _setup(settings)
    values = [_event(item_id="i-1", user_id="u-1"), _event(item_id="i-2", user_id="u-2")]
    framed, not_avro = frame_values(values, codec, rules, NOW, key_field="item_id")
    assert [k for k, _ in framed] == [b"i-1", b"i-2"] and not_avro == 0
    # Without it: the domain's key field; with --key: the literal.
    framed, _ = frame_values(values, codec, rules, NOW, default_key_field="user_id")
    assert [k for k, _ in framed] == [b"u-1", b"u-2"]
    framed, _ = frame_values(values, codec, rules, NOW, key="lit")
    assert [k for k, _ in framed] == [b"lit", b"lit"]


def test_key_field_missing_from_a_value_names_it(settings: Settings) -> None:
    codec, rules = _setup(settings)
    values = [_event(network_rtt_ms=12.5), _event(network_rtt_ms=None)]  # a nullable field
    with pytest.raises(ConfigError, match="value 2: no field network_rtt_ms for --key-field"):
        frame_values(values, codec, rules, NOW, key_field="network_rtt_ms")


def test_unchecked_skips_the_rules_and_sends_what_the_schema_refuses_as_json(
    settings: Settings,
) -> None:
    codec, rules = _setup(settings)
    broken_rule = _event(position=-5)  # encodes; the rules refuse it
    not_the_schema = {"event_id": "x-1", "user_id": "u-9"}  # no Avro encoding exists
    with pytest.raises(ConfigError, match="value 1: out_of_range: position=-5"):
        frame_values([broken_rule], codec, rules, NOW)
    with pytest.raises(ConfigError, match="value 1: does not match Interaction"):
        frame_values([not_the_schema], codec, rules, NOW)
    framed, not_avro = frame_values(
        [broken_rule, not_the_schema],
        codec,
        None,
        NOW,
        default_key_field="user_id",
        unchecked=True,
    )
    assert not_avro == 1
    (k1, v1), (k2, v2) = framed
    assert codec.decode_one(v1)["position"] == -5 and k1 == broken_rule["user_id"].encode()
    assert v2 == b'{"event_id": "x-1", "user_id": "u-9"}' and k2 == b"u-9"


def test_key_and_key_field_together_are_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["produce", "feed.interactions.v1", "--example", "--key", "a", "--key-field", "b"]
    )
    assert result.exit_code == 2 and "give --key or --key-field, not both" in result.output
