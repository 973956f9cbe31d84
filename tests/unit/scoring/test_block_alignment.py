"""Every prediction belongs to its own input, in every rollout mode and with refused records in
the batch: the record's event id is the event id inside the source message (an oracle that does
not come from the pipeline: the source bytes decoded again)."""

from __future__ import annotations

import pytest

from services.core.records import Inbound
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.serving import Serving
from services.scoring.stages import Stages
from tests.unit.scoring.test_pipeline import BAD, CODEC, GOOD, NOW, RULES, SPEC, STORE


@pytest.mark.parametrize("mode", ["none", "shadow", "canary"])
def test_each_prediction_is_its_own_inputs(model: LoadedModel, mode: str) -> None:
    values = [v for pair in zip(GOOD[:120], (BAD * 20)[:120], strict=True) for v in pair]
    messages = [Inbound("t", i % 3, i, b"k", v) for i, v in enumerate(values)]
    serving = (
        Serving(model) if mode == "none" else Serving(model, model, mode, 50.0)  # type: ignore[arg-type]
    )
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, serving), messages, NOW)
    assert len(result.predictions) + len(result.dead_letters) == len(messages)
    for p in result.predictions + result.shadow:
        source = CODEC.decode_one(p.source.value)
        assert isinstance(source, dict)
        assert p.record["event_id"] == source["event_id"]
        assert p.record["user_id"] == source["user_id"]
    if mode == "shadow":
        assert len(result.shadow) == len(result.predictions)
    if mode == "canary":
        assert {p.record["variant"] for p in result.predictions} == {"champion", "challenger"}


@pytest.mark.parametrize("mode", ["none", "shadow", "canary"])
def test_encoded_predictions_decode_to_the_records(model: LoadedModel, mode: str) -> None:
    """What the worker writes (columns through the column encoder) reads back as the records."""
    from services.codec.avro import AvroCodec
    from tests.unit.scoring.test_pipeline import IDS, SCHEMAS

    out = AvroCodec(SCHEMAS["Prediction"], IDS, "feed.predictions.v1-value")
    values = [v for pair in zip(GOOD[:120], (BAD * 20)[:120], strict=True) for v in pair]
    messages = [Inbound("t", i % 3, i, b"k", v) for i, v in enumerate(values)]
    serving = Serving(model) if mode == "none" else Serving(model, model, mode, 50.0)  # type: ignore[arg-type]
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, serving), messages, NOW)
    for block in (result.served, result.shadowed):
        if block is None:
            continue
        decoded = out.decode_many(out.encode_columns(block.columns(), len(block)))
        assert decoded == block.records()
