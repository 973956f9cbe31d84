"""The topic table follows the naming rules and matches the Avro contract."""

from __future__ import annotations

import re

from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.settings import TopicSettings
from streams.topics import topic_table

NAME = re.compile(r"^[a-z]+\.[a-z][a-z-]*\.v\d+(\.dlq)?$")


def test_names_follow_domain_entity_version() -> None:
    table = topic_table(TopicSettings())
    assert [t.name for t in table if not NAME.match(t.name)] == []
    assert len({t.name for t in table}) == len(table)


def test_default_names() -> None:
    assert [t.name for t in topic_table(TopicSettings())] == [
        "feed.interactions.v1",
        "feed.predictions.v1",
        "feed.shadow-predictions.v1",
        "feed.labels.v1",
        "feed.interactions.v1.dlq",
        "ml.drift-signals.v1",
        "ml.retrain-requests.v1",
        "feed.feature-log.v1",
        "ml.model-events.v1",
    ]


def test_every_topic_has_a_schema_and_every_schema_a_topic() -> None:
    records = set(load_schemas(DEFAULT_SCHEMAS_DIR))
    used = {t.value_record for t in topic_table(TopicSettings())}
    assert used == records


def test_renamed_topic_renames_its_dead_letter_topic() -> None:
    table = topic_table(TopicSettings(events="acme.clicks.v2"))
    assert "acme.clicks.v2.dlq" in {t.name for t in table}
    assert all(t.partitions >= 1 for t in table)
