"""A domain that declares a decision threshold gets `decision` on every prediction; one that
declares none gets null, and its predictions decode as before."""

from __future__ import annotations

import numpy as np

from services.codec.avro import AvroCodec
from services.core.records import Inbound
from services.core.settings import Settings
from services.domain.config import domain_of
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.stages import Stages
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.scoring.test_pipeline import CODEC, GOOD, IDS, NOW, RULES, SCHEMAS, SPEC, STORE

PREDICTION = AvroCodec(SCHEMAS["Prediction"], IDS, "feed.predictions.v1-value")


def _decoded(stages: Stages) -> list[dict[str, object]]:
    messages = [Inbound("feed.interactions.v1", 0, i, b"k", v) for i, v in enumerate(GOOD[:200])]
    served = process_batch(stages, messages, NOW).served
    assert served is not None and len(served) == 200
    values = PREDICTION.encode_columns(served.columns(), len(served))
    return [PREDICTION.decode_one(v) for v in values]  # type: ignore[misc]


def test_predictions_carry_the_decision_at_the_declared_threshold(
    model: LoadedModel,  # noqa: F811
) -> None:
    plain = _decoded(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model, 0.5))
    assert {p["decision"] for p in plain} == {None}
    threshold = float(np.median([p["score"] for p in plain]))  # both answers occur
    decided = _decoded(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model, threshold, True))
    assert [p["decision"] for p in decided] == [p["score"] >= threshold for p in plain]
    assert {p["decision"] for p in decided} == {True, False}


def test_the_shipped_payments_domain_declares_its_threshold() -> None:
    settings = Settings(domain="payments")
    assert domain_of(settings).decision_threshold == 0.5
    assert settings.model.decision_threshold == 0.5
    assert domain_of(Settings(domain="feed")).decision_threshold is None
    overridden = Settings(domain="payments", model={"decision_threshold": 0.9})
    assert overridden.model.decision_threshold == 0.9  # a setting wins over the domain
