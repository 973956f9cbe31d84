"""The synthetic worlds the demo, training and tests draw from: deterministic, labelled, and
with hostile inputs that say how a worker must refuse them."""

from __future__ import annotations

import importlib

import pytest

from services.codec.factory import codec_for
from services.core.settings import Settings
from services.domain.config import domain_of
from streams.topics import by_record

DOMAINS = ("feed", "payments", "delivery", "delivery_band")


@pytest.mark.parametrize("name", DOMAINS)
def test_a_world_is_the_same_for_the_same_seed(name: str) -> None:
    domain = domain_of(Settings(domain=name))
    generator = importlib.import_module(str(domain.generator))
    one = generator.make(domain.spec, seed=3, entities=50, start_time_ms=1_700_000_000_000)
    two = generator.make(domain.spec, seed=3, entities=50, start_time_ms=1_700_000_000_000)
    assert one.events(20) == two.events(20)
    labels = one.labels(one.events(20))
    assert {x[domain.label.join_key] for x in labels} <= {e["event_id"] for e in one.events(20)}


@pytest.mark.parametrize("name", DOMAINS)
def test_hostile_values_name_a_stage_and_reason(name: str) -> None:
    settings = Settings(domain=name)
    domain = domain_of(settings)
    generator = importlib.import_module(str(domain.generator))
    world = generator.make(domain.spec, seed=3, entities=50, start_time_ms=1_700_000_000_000)
    codec = codec_for(settings, by_record(settings.topics, domain.event_record))
    event = {k: v for k, v in world.events(1)[0].items() if not k.startswith("_")}
    cases = generator.hostile_values(codec, event)
    assert len(cases) >= 5
    assert all(isinstance(v, bytes) and stage and reason for v, stage, reason in cases)
    assert {stage for _, stage, _ in cases} >= {"decode", "validate"}
